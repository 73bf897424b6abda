"""What the gateway sends a provider, judged from the provider's side: the request each official SDK sends for the
same call (path, credential header, version header) and the strict mock provider's verdict on the gateway's whole
request. These replace tests that restated the format modules' constants (upstream_path, the credential header,
EXTRA_HEADERS, the stream media type): a wrong path, a missing or malformed credential or version header, or a stream
answered with the wrong content type now fails here for what it breaks. (NAME: tests/unit/test_registry.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from urllib.parse import urlsplit

import anthropic
import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import types as gtypes

from extproc.translation import canonical as c
from extproc.translation.formats import registry
from extproc.translation.formats.contract import StreamOptions
from tests.mocks.providers import MockProvider, Received

MODULES: dict[str, ModuleType] = {kind: registry.get(kind) for kind in ("openai", "anthropic", "gemini")}  # type: ignore[misc]
KEYS = {"openai": "sk-upstream-openai", "anthropic": "sk-ant-upstream", "gemini": "AIza-upstream"}
TARGET = "target-model"


@pytest.fixture(scope="module")
def mocks() -> Iterator[dict[str, MockProvider]]:
    started = {kind: MockProvider(kind, KEYS[kind]).start() for kind in MODULES}
    yield started
    for m in started.values():
        m.stop()


def sdk_sends(kind: str, mock: MockProvider, stream: bool) -> Received:
    """Drive the provider's official SDK, pointed at the mock, through one text turn; return what arrived."""
    text = [{"role": "user", "content": "hi"}]
    if kind == "openai":
        oc = openai.OpenAI(base_url=mock.base_url, api_key=KEYS[kind], max_retries=0)
        if stream:
            with oc.chat.completions.create(model=TARGET, messages=text, stream=True) as s:  # type: ignore[arg-type]
                list(s)
        else:
            oc.chat.completions.create(model=TARGET, messages=text)  # type: ignore[arg-type]
    elif kind == "anthropic":
        ac = anthropic.Anthropic(base_url=mock.base_url, api_key=KEYS[kind], max_retries=0)
        if stream:
            with ac.messages.stream(model=TARGET, max_tokens=50, messages=text) as s:  # type: ignore[arg-type]
                s.get_final_message()
        else:
            ac.messages.create(model=TARGET, max_tokens=50, messages=text)  # type: ignore[arg-type]
    else:
        gc = genai.Client(api_key=KEYS[kind], http_options=gtypes.HttpOptions(base_url=mock.base_url,
                                                                            api_version="v1beta"))  # fmt: skip
        if stream:
            list(gc.models.generate_content_stream(model=TARGET, contents="hi"))
        else:
            gc.models.generate_content(model=TARGET, contents="hi")
    rec = mock.last()
    assert rec.status == 200, rec
    return rec


def credential(fmt: ModuleType, key: str) -> tuple[str, str]:
    """The header Envoy injects with the provider's key (contract.CredentialHeader)."""
    return fmt.CREDENTIAL.header, fmt.CREDENTIAL.prefix + key


def gateway_request(kind: str, mock: MockProvider, stream: bool) -> httpx.Response:
    """The request the gateway sends for a translated call to this provider: base URL + upstream_path, the credential
    Envoy injects, the format's extra headers, the body from build_request."""
    fmt = MODULES[kind]
    req = c.Request(model="client-alias", messages=[c.Message("user", [c.Text("hi")])], max_tokens=50, stream=stream,
                    include_usage=stream)  # fmt: skip
    body = fmt.build_request(req, model=TARGET)
    headers = [credential(fmt, KEYS[kind]), *fmt.EXTRA_HEADERS, ("content-type", "application/json")]
    return httpx.post(mock.base_url + fmt.upstream_path(model=TARGET, stream=stream), content=body, headers=headers)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", list(MODULES))
def test_upstream_path_and_headers_are_what_the_official_sdk_sends(
    mocks: dict[str, MockProvider], kind: str, stream: bool
) -> None:
    fmt, mock = MODULES[kind], mocks[kind]
    sent = sdk_sends(kind, mock, stream)
    assert urlsplit(mock.base_url).path + fmt.upstream_path(model=TARGET, stream=stream) == sent.path
    # The same key, in the header the SDK uses or (Anthropic: the SDK sends "authorization: Bearer", the gateway
    # x-api-key) another one the API takes; which names the API takes is the mock's to judge (next test).
    sdk_keys = {v.removeprefix("Bearer ") for n, v in sent.headers.items() if n in ("authorization", "x-api-key",
                                                                                    "x-goog-api-key")}  # fmt: skip
    gateway_keys = {credential(fmt, KEYS[kind])[1].removeprefix("Bearer ")}
    assert sdk_keys == gateway_keys == {KEYS[kind]}
    for name, _ in fmt.EXTRA_HEADERS:  # the SDK sends each too (its value may be a newer API version)
        assert name in sent.headers, (name, sent.headers)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", list(MODULES))
def test_upstream_request_is_accepted_and_answered_by_the_provider(
    mocks: dict[str, MockProvider], kind: str, stream: bool
) -> None:
    """The strict mock refuses a wrong path (404), a missing or wrong credential (401/403/400), a missing or unknown
    anthropic-version (400) and a malformed body (400); the gateway's request gets the answer it asked for, which the
    provider side of the format reads back."""
    fmt, mock = MODULES[kind], mocks[kind]
    r = gateway_request(kind, mock, stream)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream" if stream else "application/json")
    if stream:
        dec = fmt.stream_decoder(StreamOptions())
        events = dec.feed(r.content) + dec.close()
        text = "".join(e.text for e in events if isinstance(e, c.TextDelta))
        assert [e.reason for e in events if isinstance(e, c.Finish)] == ["stop"]
    else:
        resp = fmt.parse_response(r.content)
        text = "".join(p.text for p in resp.parts if isinstance(p, c.Text))
        assert resp.finish_reason == "stop"
    assert text == f"Hello from mock {kind}. You said: hi"
    assert mock.last().body == orjson.loads(mock.last().raw)


@pytest.mark.parametrize(
    ("kind", "client_path", "query"),
    [
        ("openai", "/openai/v1/chat/completions", ""),
        ("anthropic", "/anthropic/v1/messages", ""),
        ("gemini", "/gemini/v1beta/models/m:streamGenerateContent", "alt=sse"),
        ("gemini", "/gemini/v1beta/models/m:streamGenerateContent", ""),
    ],
)
def test_stream_content_type_is_the_providers_own(
    mocks: dict[str, MockProvider], kind: str, client_path: str, query: str
) -> None:
    """A client is answered a stream with the content type its own provider uses for one (SSE, or Gemini's JSON
    array without ?alt=sse), asked on the path a same-format request goes upstream on."""
    fmt, mock = MODULES[kind], mocks[kind]
    endpoint = fmt.route("POST", client_path, query)
    assert endpoint is not None
    path = fmt.passthrough_path(endpoint, model=TARGET, path=client_path, query=query)  # a same-format stream
    req = c.Request(model="m", messages=[c.Message("user", [c.Text("hi")])], max_tokens=50, stream=True)
    headers = [credential(fmt, KEYS[kind]), *fmt.EXTRA_HEADERS]
    r = httpx.post(mock.base_url + path, content=fmt.build_request(req, model=TARGET), headers=headers)
    assert r.status_code == 200, r.text
    encoder = fmt.stream_encoder(StreamOptions(model="m", endpoint=endpoint))
    assert r.headers["content-type"].split(";")[0] == encoder.media_type
