"""One place per wire format: every registered format satisfies the whole contract, and a 4th format registered in
one line (``tests/unit/echo_format.py``) gets routes, gateway-key auth, model listings, errors, translation both ways
and its Envoy pieces without any other edit."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import orjson
import pytest

from extproc.core.actions import Forward, Reply
from extproc.core.address import Address
from extproc.core.config import build_config
from extproc.core.contract import ROUTE_HEADER
from extproc.core.exchange import Exchange, Gateway
from extproc.ops.credentials import CredentialFiles
from extproc.ops.envoy_config import render
from extproc.translation.formats import contract, registry
from tests.unit import echo_format

# -------------------------------------------------------------------------------------------------- the contract


def _members(proto: type = contract.WireFormat) -> dict[str, Any]:
    """Every member the contract names, its base protocols' included (``ProviderFormat``): attributes (from
    annotations) and methods (with their signatures)."""
    out: dict[str, Any] = {}
    for klass in reversed(proto.__mro__):
        if klass.__module__ != contract.__name__:
            continue
        out.update(dict.fromkeys(klass.__annotations__))
        for name, fn in vars(klass).items():
            if callable(fn) and not name.startswith("_"):
                out[name] = inspect.signature(fn)
    return out


def _params(sig: inspect.Signature, drop_self: bool) -> list[tuple[str, Any, bool]]:
    params = list(sig.parameters.values())[1 if drop_self else 0 :]
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in params]


@pytest.mark.parametrize("name", [*registry.names(), "echo", *registry.CLOUD_FORMATS])
def test_every_format_satisfies_the_whole_contract(name: str) -> None:
    cloud = name in registry.CLOUD_FORMATS
    fmt: ModuleType = echo_format if name == "echo" else registry.provider(name)  # type: ignore[assignment]
    members = _members(contract.CloudFormat if cloud else contract.WireFormat)
    assert {"upstream_path", "parse_error", "stream_decoder", "NAME", "CREDENTIAL"} <= set(members)
    for member, sig in members.items():
        assert hasattr(fmt, member), f"{name} lacks {member}"
        if sig is None:
            continue
        impl = getattr(fmt, member)
        assert callable(impl), f"{name}.{member} is not callable"
        wanted = _params(sig, drop_self=True)
        got = _params(inspect.signature(impl), drop_self=False)
        # Same names and kinds, in order; the implementation may take more optional keyword arguments.
        assert [(n, k) for n, k, _ in got[: len(wanted)]] == [(n, k) for n, k, _ in wanted], (name, member)
        assert all(has_default for _, _, has_default in got[len(wanted) :]), (name, member)
        for (n, _, required), (_, _, has_default) in zip(wanted, got, strict=False):
            assert has_default or not required, f"{name}.{member}({n}) must be optional as the contract says"
    assert isinstance(fmt.CREDENTIAL, contract.CredentialHeader)
    if cloud:
        assert name == fmt.NAME and fmt.PASSTHROUGH_FROM in (None, *registry.names())
        return
    assert fmt.PATH_PREFIX.startswith("/") and fmt.PATH_PREFIX.endswith("/")


def test_formats_and_prefixes_are_registered_once() -> None:
    assert len(set(registry.names())) == len(registry.FORMATS)
    for name, fmt in registry.FORMATS.items():
        assert name == fmt.NAME
        assert registry.for_prefix(fmt.PATH_PREFIX + "x") is not None


# -------------------------------------------------------------------------------------------------- a 4th format
@pytest.fixture
def with_echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.FORMATS, "echo", echo_format)  # the one registry line
    yield


def _gateway(keys: bool = False) -> Gateway:
    data: dict[str, Any] = {
        "version": "1",
        "providers": [{"name": "echoer", "type": "echo", "base_url": "http://127.0.0.1:9/e", "api_key_env": "ECHO_K"}],
        "models": [
            {"name": "parrot", "provider": "echoer", "target_model": "parrot-2"},
            {"name": "claude", "provider": "anthropic"},
        ],
    }
    env = {"TEAM": "team-key"}
    if keys:
        data["auth"] = {"api_keys": ["TEAM"]}
    return Gateway(build_config(data, "t.yaml", env))


def _send(gw: Gateway, method: str, path: str, body: dict[str, Any] | None, **headers: str) -> tuple[Exchange, Any]:
    ex = Exchange(gw)
    raw = orjson.dumps(body) if body is not None else b""
    h = {":method": method, ":path": path, "content-length": str(len(raw)), "x-request-id": "r1", **headers}
    first = ex.on_request_headers(h, end_of_stream=body is None)
    if isinstance(first, Reply) or body is None:
        return ex, first
    return ex, ex.on_request_body(raw)


def test_a_new_format_gets_routes_listings_and_errors(with_echo: None) -> None:
    gw = _gateway()
    _, listing = _send(gw, "GET", "/echo/v1/models", None)
    assert isinstance(listing, Reply) and orjson.loads(listing.body) == {"names": ["parrot", "claude"]}
    _, missing = _send(gw, "POST", "/echo/v1/nothing", {"model": "parrot"})
    assert isinstance(missing, Reply) and missing.status == 404
    assert orjson.loads(missing.body)["oops"]["kind"] == "not_found"
    _, unknown_model = _send(gw, "POST", "/echo/v1/say", {"model": "nope", "prompt": "hi"})
    assert isinstance(unknown_model, Reply) and unknown_model.status == 404
    assert orjson.loads(unknown_model.body)["oops"]["kind"] == "unknown_model"
    _, bad = _send(gw, "POST", "/echo/v1/say", {"model": "claude", "prompt": 5})
    assert isinstance(bad, Reply) and orjson.loads(bad.body)["oops"] == {
        "status": 400,
        "kind": "invalid_request",
        "text": "prompt must be a string",
    }
    _, wrong_method = _send(gw, "DELETE", "/echo/v1/models", None)
    assert isinstance(wrong_method, Reply) and wrong_method.status == 405 and ("allow", "GET") in wrong_method.headers


def test_a_new_format_authenticates_with_its_own_header(with_echo: None) -> None:
    gw = _gateway(keys=True)
    _, refused = _send(gw, "POST", "/echo/v1/say", {"model": "parrot", "prompt": "hi"}, authorization="Bearer team-key")
    assert isinstance(refused, Reply) and refused.status == 401 and b"oops" in refused.body
    _, ok = _send(gw, "POST", "/echo/v1/say", {"model": "parrot", "prompt": "hi"}, **{"x-echo-key": "team-key"})
    assert isinstance(ok, Forward)
    assert "x-echo-key" not in dict(ok.set_headers)


def test_a_new_format_as_client_translated_to_anthropic(with_echo: None) -> None:
    ex, fwd = _send(_gateway(), "POST", "/echo/v1/say", {"model": "claude", "prompt": "hi"})
    assert isinstance(fwd, Forward)
    h = dict(fwd.set_headers)
    assert h[ROUTE_HEADER] == "anthropic" and h[":path"] == "/v1/messages"
    sent = orjson.loads(fwd.body or b"")
    assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["model"] == "claude"
    ex.on_response_headers({":status": "200", "content-type": "application/json"})
    answer = b'{"id":"m","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"yo"}],'
    answer += b'"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}'
    out = ex.on_response_body(answer)
    assert orjson.loads(out.body or b"") == {"said": "yo", "model": "claude", "tokens": 2}


def test_a_new_format_as_provider_for_an_openai_client(with_echo: None) -> None:
    body = {"model": "parrot", "messages": [{"role": "user", "content": "hello"}]}
    ex, fwd = _send(_gateway(), "POST", "/openai/v1/chat/completions", body)
    assert isinstance(fwd, Forward)
    h = dict(fwd.set_headers)
    assert h[ROUTE_HEADER] == "echoer" and h[":path"] == "/e/say" and h["x-echo-version"] == "1"
    assert orjson.loads(fwd.body or b"") == {"model": "parrot-2", "prompt": "hello"}
    ex.on_response_headers({":status": "200", "content-type": "application/json"})
    out = orjson.loads(ex.on_response_body(b'{"said": "hello", "tokens": 1}').body or b"")
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["content"] == "hello"
    assert out["model"] == "parrot" and out["created"] > 0


def test_a_new_format_gets_its_envoy_pieces(with_echo: None) -> None:
    files = CredentialFiles(sds_dir="/etc/x", keys_dir="/run/k")
    boot = render(
        _gateway().config, listen=Address.parse(":8080"), admin=Address.parse(":9901"),
        extproc=[Address.parse("127.0.0.1:1")], credentials=files,
    )  # fmt: skip
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    options = clusters["provider_echoer"]["typed_extension_protocol_options"]
    (injector, _codec) = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
    generic = injector["typed_config"]["credential"]["typed_config"]
    assert generic["header"] == "x-echo-secret" and "header_value_prefix" not in generic
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    echo_mappers = [
        m for m in hcm["local_reply_config"]["mappers"]
        if {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": "/echo/"}}}}
        in m["filter"].get("and_filter", {}).get("filters", [])
    ]  # fmt: skip
    assert echo_mappers and all("oops" in m["body_format_override"]["json_format"] for m in echo_mappers)


def test_a_remembered_route_is_dropped_with_its_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing remembers request lines; once a format is unregistered, its remembered lines route nowhere."""
    with monkeypatch.context() as m:
        m.setitem(registry.FORMATS, "echo", echo_format)
        found = registry.route("POST", "/echo/v1/say", "")
        assert found is not None and found[0] is echo_format
        assert registry.route("POST", "/echo/v1/say", "") == found  # from memory
    assert registry.route("POST", "/echo/v1/say", "") is None
