"""The Envoy pieces of a model with several targets (docs/fallback.md): its route and cluster, checked field by field
where they carry a decision, and the whole bootstrap checked by the real Envoy (``--mode validate``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.core.address import Address
from extproc.core.config import build_config
from extproc.core.contract import (
    ATTEMPT_ATTRIBUTES,
    ATTEMPT_LOG_HEADER,
    ATTEMPTS_HEADER,
    PREPARED_HEADER,
    PREPARED_KEY,
    ROUTE_HEADER,
    SERVED_BY_HEADER,
    SERVED_FORMAT_HEADER,
    TARGET_HEADER,
)
from extproc.ops.credentials import prepare
from extproc.ops.envoy_config import dump, render
from extproc.ops.launcher import find_envoy

ENV = {"OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2", "GEMINI_API_KEY": "k3", "OPENAI_B": "k4"}
PROVIDERS = [
    {"name": "openai-b", "type": "openai", "base_url": "https://eu.example.com/openai/v1", "api_key_env": "OPENAI_B"},
    {"name": "local", "type": "openai", "base_url": "http://127.0.0.1:11434/v1"},
]
SMART = {
    "name": "smart",
    "targets": [
        {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        {
            "balance": [
                {"provider": "openai", "model": "gpt-4.1", "weight": 3},
                {"provider": "openai-b", "model": "gpt-4.1", "weight": 1},
            ]
        },
        {"provider": "gemini", "model": "gemini-2.5-pro"},
    ],
}
MIXED = {"name": "mixed", "targets": [{"provider": "local", "model": "llama"}, {"provider": "openai", "model": "g"}]}


def bootstrap(tmp: Path, models: list[dict], **extra: object) -> dict[str, Any]:
    cfg = build_config({"version": "1", "providers": PROVIDERS, "models": models, **extra}, "t.yaml", ENV)
    files, _ = prepare(tmp, cfg, ENV)
    return render(cfg, listen=Address(host="127.0.0.1", port=18080), admin=Address(host="127.0.0.1", port=18081),
                  extproc=[Address(path=str(tmp / "x.sock"))], credentials=files)  # fmt: skip


def routes(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}


def clusters(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in b["static_resources"]["clusters"]}


def test_single_target_models_render_exactly_as_before(tmp_path: Path) -> None:
    plain = [{"name": "a", "provider": "openai"}, {"name": "b", "targets": [{"provider": "gemini", "model": "g"}]}]
    b = bootstrap(tmp_path, plain)
    assert not any(n.startswith("fallback_") for n in clusters(b))
    assert not any(n.startswith("model/") for n in routes(b))
    # A fallback model adds its own route and cluster (and its providers' plain ones, for token counting and
    # listings), and changes nothing of what was there.
    with_fb = bootstrap(tmp_path, [*plain, SMART])
    for name, c in clusters(b).items():
        assert clusters(with_fb)[name] == c
    for name, r in routes(b).items():
        assert routes(with_fb)[name] == r


def test_fallback_route_retries_across_levels(tmp_path: Path) -> None:
    b = bootstrap(tmp_path, [SMART], fallback={"per_try_timeout": "15s", "retry_after_cap": "3s"})
    r = routes(b)["model/smart"]
    assert r["match"]["headers"] == [{"name": ROUTE_HEADER, "string_match": {"exact": "model/smart"}}]
    assert r["route"]["cluster"] == "fallback_smart" and r["route"]["auto_host_rewrite"] is True
    retry = r["route"]["retry_policy"]
    assert retry["num_retries"] == 2  # one attempt per level
    assert set(retry["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset", "5xx",
                                                 "retriable-status-codes"}  # fmt: skip
    assert retry["retriable_status_codes"] == [429]  # and no other 4xx
    assert retry["per_try_timeout"] == "15.000s"
    assert retry["rate_limited_retry_back_off"]["max_interval"] == "3.000s"
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    added = {h["header"]["key"]: h["header"]["value"] for h in r["response_headers_to_add"]}
    assert set(added) == {SERVED_BY_HEADER, SERVED_FORMAT_HEADER, ATTEMPTS_HEADER, ATTEMPT_LOG_HEADER}
    # One level of several deployments: a retry to another deployment of it.
    one = {"name": "one", "targets": [{"balance": [{"provider": "openai", "model": "x"},
                                                   {"provider": "openai-b", "model": "x"}]}]}  # fmt: skip
    assert routes(bootstrap(tmp_path, [one]))["model/one"]["route"]["retry_policy"]["num_retries"] == 1


def test_fallback_cluster_endpoints_priorities_weights_tls(tmp_path: Path) -> None:
    c = clusters(bootstrap(tmp_path, [SMART]))["fallback_smart"]
    assert c["type"] == "STRICT_DNS"
    eps = c["load_assignment"]["endpoints"]
    got = [(e["priority"], e["load_balancing_weight"], e["lb_endpoints"][0]["endpoint"]["hostname"],
            e["lb_endpoints"][0]["metadata"]["filter_metadata"]["ai_gateway"]["target"]) for e in eps]  # fmt: skip
    assert got == [
        (0, 1, "api.anthropic.com", "anthropic/claude-sonnet-4-5"),
        (1, 3, "api.openai.com", "openai/gpt-4.1"),
        (1, 1, "eu.example.com", "openai-b/gpt-4.1"),
        (2, 1, "generativelanguage.googleapis.com", "gemini/gemini-2.5-pro"),
    ]
    meta = eps[2]["lb_endpoints"][0]["metadata"]["filter_metadata"]
    # name, type, api, path prefix, target model; a cloud's api_version, project, location, region (none here)
    attempt = ["openai-b", "openai", "chat", "/openai/v1", "gpt-4.1", None, None, None, None]
    assert json.loads(meta["ai_gateway"]["attempt"]) == attempt
    assert meta["envoy.transport_socket_match"] == {"tls_host": "eu.example.com"}
    # Every target's own SNI and certificate name.
    tls = {m["match"]["tls_host"]: m["transport_socket"]["typed_config"] for m in c["transport_socket_matches"]}
    assert set(tls) == {"api.anthropic.com", "api.openai.com", "eu.example.com", "generativelanguage.googleapis.com"}
    assert all(t["sni"] == h for h, t in tls.items())
    # A level keeps its traffic while one of its targets is healthy; an ejected target gets none.
    assert c["load_assignment"]["policy"]["overprovisioning_factor"] >= 10_000
    assert c["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    assert c["outlier_detection"]["consecutive_5xx"] == 3


def test_fallback_cluster_filters_translate_each_attempt_and_inject_each_key(tmp_path: Path) -> None:
    c = clusters(bootstrap(tmp_path, [SMART, MIXED]))["fallback_smart"]
    filters = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "http_filters"
    ]
    names = [f["name"] for f in filters]
    assert names == [
        "ai_gateway.attempt_target",
        "ai_gateway.attempt_log",
        "ai_gateway.attempt",
        "ai_gateway.credential.anthropic",
        "ai_gateway.credential.gemini",
        "ai_gateway.credential.openai",
        "ai_gateway.credential.openai-b",
        "ai_gateway.attempt_done",
        "envoy.filters.http.upstream_codec",
    ]
    wrapped = filters[2]["typed_config"]
    ext = wrapped["extension_config"]["typed_config"]
    assert ext["request_attributes"] == list(ATTEMPT_ATTRIBUTES)
    assert ext["processing_mode"]["request_body_mode"] == "NONE" and not ext["failure_mode_allow"]
    # Skipped for the first attempt to the target the request was built for (the Lua filter marks it).
    skip = wrapped["xds_matcher"]["matcher_list"]["matchers"][0]
    assert skip["predicate"]["single_predicate"]["input"]["typed_config"]["header_name"] == PREPARED_HEADER
    assert skip["predicate"]["single_predicate"]["value_match"] == {"exact": "1"}
    assert skip["on_match"]["action"]["name"] == "skip"
    lua = filters[1]["typed_config"]["default_source_code"]["inline_string"]
    assert f'"{PREPARED_HEADER}", "1"' in lua and f'md["{PREPARED_KEY}"] == label' in lua
    # Each provider's injector runs only for an attempt to it.
    cred = filters[6]["typed_config"]
    pred = cred["xds_matcher"]["matcher_list"]["matchers"][0]["predicate"]["not_matcher"]["single_predicate"]
    assert pred["input"]["typed_config"]["header_name"] == TARGET_HEADER
    assert pred["value_match"] == {"exact": "openai-b"}
    generic = cred["typed_config"] if "typed_config" in cred else cred["extension_config"]["typed_config"]
    assert generic["credential"]["typed_config"]["header_value_prefix"] == "Bearer "
    # A plain-HTTP target (a local server) takes no key and speaks HTTP/1.1; TLS targets beside it too.
    mixed = clusters(bootstrap(tmp_path, [MIXED]))["fallback_mixed"]
    opts = mixed["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "explicit_http_config" in opts
    assert [f["name"] for f in opts["http_filters"]].count("ai_gateway.credential.openai") == 1
    assert "ai_gateway.credential.local" not in [f["name"] for f in opts["http_filters"]]
    tls = mixed["transport_socket_matches"][0]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["alpn_protocols"] == ["http/1.1"]


def test_rate_limit_cooldown_is_in_the_attempt_log_filter(tmp_path: Path) -> None:
    def lua(**fallback: object) -> str:
        c = clusters(bootstrap(tmp_path, [SMART], fallback=fallback))["fallback_smart"]
        f = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        return f["http_filters"][1]["typed_config"]["default_source_code"]["inline_string"]

    assert '"429"' in lua() and '"503"' in lua()
    assert '"429"' not in lua(cooldown={"rate_limited": False})


@pytest.mark.parametrize("models", [[SMART], [SMART, MIXED], [MIXED]], ids=["tls", "both", "mixed"])
def test_envoy_accepts_the_bootstrap(tmp_path: Path, models: list[dict]) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(dump(bootstrap(tmp_path, models)))
    done = subprocess.run(
        [find_envoy(None), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "OK" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    assert yaml.safe_load(path.read_text())["static_resources"]["clusters"]
