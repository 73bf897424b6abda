"""Self-test of the strict mock providers (tests/mocks/providers.py), driven with plain httpx (no Envoy)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from google import genai
from google.genai import types as gtypes
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from tests.mocks.providers import GEMINI_THOUGHT_SIGNATURES, MockProvider

OA_KEY, AN_KEY, GE_KEY = "sk-openai-mock", "sk-ant-mock", "gemini-mock-key"
WEATHER_OA = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_AN = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_GE = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
        }
    ]
}


@pytest.fixture(scope="module")
def oa() -> Iterator[MockProvider]:
    m = MockProvider("openai", OA_KEY).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def an() -> Iterator[MockProvider]:
    m = MockProvider("anthropic", AN_KEY).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def ge() -> Iterator[MockProvider]:
    m = MockProvider("gemini", GE_KEY).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


OA_H = {"authorization": f"Bearer {OA_KEY}"}
AN_H = {"x-api-key": AN_KEY, "anthropic-version": "2023-06-01"}
GE_H = {"x-goog-api-key": GE_KEY}


def oa_post(c: httpx.Client, m: MockProvider, body: dict, headers: dict | None = None) -> httpx.Response:
    return c.post(f"{m.base_url}/chat/completions", json=body, headers=OA_H if headers is None else headers)


def an_post(c: httpx.Client, m: MockProvider, body: dict, headers: dict | None = None) -> httpx.Response:
    return c.post(f"{m.base_url}/v1/messages", json=body, headers=AN_H if headers is None else headers)


def ge_post(
    c: httpx.Client, m: MockProvider, body: dict, headers: dict | None = None, model: str = "gemini-mock", stream=False
) -> httpx.Response:
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    url = f"{m.base_url}/v1beta/models/{model}:{action}"
    return c.post(url, json=body, headers=GE_H if headers is None else headers)


def oa_body(text: str, **kw) -> dict:
    return {"model": "gpt-mock", "messages": [{"role": "user", "content": text}], **kw}


def an_body(text: str, **kw) -> dict:
    return {"model": "claude-mock", "max_tokens": 100, "messages": [{"role": "user", "content": text}], **kw}


def ge_body(text: str, **kw) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **kw}


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """Parse an SSE body into (event, data) pairs (LF or CRLF framing)."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.decode().split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        out.append((event, "\n".join(data)))
    return out


# ---------------------------------------------------------------------------------------------------- happy paths


def test_openai_valid_request(client, oa):
    oa.clear()
    r = oa_post(client, oa, oa_body("hi there", temperature=1.5, max_tokens=50))
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    cc = ChatCompletion.model_validate(r.json())
    assert cc.model == "gpt-mock"
    assert cc.choices[0].message.content == "Hello from mock openai. You said: hi there"
    assert cc.choices[0].finish_reason == "stop"
    assert (cc.usage.prompt_tokens, cc.usage.completion_tokens, cc.usage.total_tokens) == (11, 7, 18)
    assert cc.usage.prompt_tokens_details.cached_tokens == 0
    rec = oa.last()
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {OA_KEY}"
    assert rec.body["messages"][0]["content"] == "hi there"
    assert orjson.loads(rec.raw) == rec.body
    assert len(oa.requests) == 1


def test_anthropic_valid_request(client, an):
    body = an_body("hi there", system="be nice", temperature=0.5)
    r = an_post(client, an, body)
    assert r.status_code == 200, r.text
    msg = Message.model_validate(r.json())
    assert msg.id.startswith("msg_") and msg.model == "claude-mock"
    assert msg.content[0].text == "Hello from mock anthropic. You said: hi there"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 7)


def test_gemini_valid_request(client, ge):
    body = ge_body("hi there", generationConfig={"temperature": 0.2, "maxOutputTokens": 64})
    r = ge_post(client, ge, body, model="gemini-2.5-flash")
    assert r.status_code == 200, r.text
    resp = gtypes.GenerateContentResponse.model_validate(r.json())
    assert resp.text == "Hello from mock gemini. You said: hi there"
    assert resp.candidates[0].finish_reason == gtypes.FinishReason.STOP
    u = resp.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (11, 7, 18)
    assert resp.model_version == "gemini-2.5-flash"
    # /v1/ path, ?key= and snake_case field names (proto JSON accepts both) work too
    url = f"{ge.base_url}/v1/models/gemini-x:generateContent?key={GE_KEY}"
    r = client.post(url, json={"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"top_k": 3}})
    assert r.status_code == 200, r.text


def test_base_urls(oa, an, ge):
    assert oa.base_url == f"http://127.0.0.1:{oa.port}/v1"
    assert an.base_url == f"http://127.0.0.1:{an.port}"
    assert ge.base_url == f"http://127.0.0.1:{ge.port}"


# ---------------------------------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "body, needle",
    [
        (oa_body("x", foo=1), "Unrecognized request argument supplied: foo"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}]}, "'extra' was unexpected"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "z": 1}]}]}, "'z'"),
        ({"model": "m", "messages": [{"role": "bot", "content": "x"}]}, "Invalid value: 'bot'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "you must provide a model parameter"),
        ({"model": "m"}, "Missing required parameter: 'messages'"),
        (oa_body("x", temperature=2.5), "decimal above maximum value"),
        (oa_body("x", tools=[{"type": "function", "function": {"name": "f", "params": {}}}]), "'params'"),
        (oa_body("x", stream_options={"include_usage": True}), "only allowed when 'stream' is enabled"),
    ],
)
def test_openai_rejects(client, oa, body, needle):
    r = oa_post(client, oa, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert needle in err["message"]


@pytest.mark.parametrize(
    "body, needle",
    [
        (an_body("x", foo=1), "foo: Extra inputs are not permitted"),
        (an_body("x", temperature=1.5), "temperature: Input should be less than or equal to 1"),
        (an_body("x", max_tokens=0), "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "s"}]},
            'Unexpected role "system"',
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "q": 1}]}],
            },
            "messages.0.content.0.text.q: Extra inputs are not permitted",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}
                        ],
                    }
                ],
            },
            "media_type",
        ),
        (
            an_body("x", tools=[{"name": "bad name!", "input_schema": {"type": "object"}}]),
            "String should match pattern",
        ),
    ],
)
def test_anthropic_rejects(client, an, body, needle):
    r = an_post(client, an, body)
    assert r.status_code == 400, r.text
    j = r.json()
    assert j["type"] == "error" and j["error"]["type"] == "invalid_request_error"
    assert needle in j["error"]["message"]


@pytest.mark.parametrize(
    "body, needle",
    [
        (ge_body("x", foo=1), 'Unknown name "foo"'),
        (ge_body("x", generationConfig={"maxTokens": 5}), "Unknown name \"maxTokens\" at 'generation_config'"),
        ({"contents": [{"role": "user", "parts": [{"text": "x", "bogus": 1}]}]}, 'Unknown name "bogus"'),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
        ({"contents": []}, "contents is not specified"),
        ({"generationConfig": {}}, "contents is not specified"),
        (ge_body("x", generationConfig={"temperature": 3}), "temperature"),
        (
            ge_body(
                "x", tools=[{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "$schema": "x"}}]}]
            ),
            'Unknown name "$schema"',
        ),
        ({"contents": [{"parts": [{"text": "x", "inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]}, "oneof"),
    ],
)
def test_gemini_rejects(client, ge, body, needle):
    r = ge_post(client, ge, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    assert needle in err["message"]


def test_auth(client, oa, an, ge):
    r = oa_post(client, oa, oa_body("x"), headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert oa_post(client, oa, oa_body("x"), headers={}).status_code == 401
    assert oa_post(client, oa, oa_body("x"), headers={"authorization": OA_KEY}).status_code == 401  # no "Bearer "

    r = an_post(client, an, an_body("x"), headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert an_post(client, an, an_body("x"), headers={"anthropic-version": "2023-06-01"}).status_code == 401
    r = an_post(client, an, an_body("x"), headers={"x-api-key": AN_KEY})
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]

    # Google: a wrong key is 400 INVALID_ARGUMENT "API key not valid", no key at all is 403 PERMISSION_DENIED
    r = ge_post(client, ge, ge_body("x"), headers={"x-goog-api-key": "wrong"})
    assert r.status_code == 400 and "API key not valid" in r.json()["error"]["message"]
    r = ge_post(client, ge, ge_body("x"), headers={})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("header", ["x-api-key", "x-goog-api-key"])
def test_foreign_credentials_openai(client, oa, header):
    oa.clear()
    r = oa_post(client, oa, oa_body("x"), headers={**OA_H, header: "leaked"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == f"foreign credential header {header}"
    assert oa.last().status == 400 and len(oa.requests) == 1  # recorded even though rejected


def test_foreign_credentials_others(client, an, ge):
    r = an_post(client, an, an_body("x"), headers={**AN_H, "authorization": "Bearer leaked"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "foreign credential header authorization"
    # the Anthropic API also accepts its own key as "Authorization: Bearer <key>" (what today's SDK sends)
    r = an_post(
        client, an, an_body("x"), headers={"authorization": f"Bearer {AN_KEY}", "anthropic-version": "2023-06-01"}
    )
    assert r.status_code == 200, r.text
    r = ge_post(client, ge, ge_body("x"), headers={**GE_H, "x-api-key": "leaked"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "foreign credential header x-api-key"


def test_unknown_path(client, oa, an, ge):
    assert client.post(f"{oa.base_url}/completions", json={}, headers=OA_H).status_code == 404
    assert client.post(f"{an.base_url}/v1/complete", json={}, headers=AN_H).status_code == 404
    assert client.post(f"{ge.base_url}/v1beta/models/x:predict", json={}, headers=GE_H).status_code == 404


def test_bad_json(client, oa, an, ge):
    r = client.post(f"{oa.base_url}/chat/completions", content=b"{nope", headers=OA_H)
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    assert oa.last().body is None and oa.last().raw == b"{nope"
    assert client.post(f"{an.base_url}/v1/messages", content=b"[1]", headers=AN_H).status_code == 400
    url = f"{ge.base_url}/v1beta/models/g:generateContent"
    assert client.post(url, content=b"{", headers=GE_H).status_code == 400


# ---------------------------------------------------------------------------------------------------- tools


def test_openai_tool_calls_and_results(client, oa):
    r = oa_post(client, oa, oa_body("weather?", tools=[WEATHER_OA]))
    cc = ChatCompletion.model_validate(r.json())
    assert cc.choices[0].finish_reason == "tool_calls"
    calls = cc.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert orjson.loads(calls[0].function.arguments) == {"city": "Paris"}

    r = oa_post(client, oa, oa_body("weather? PARALLEL", tools=[WEATHER_OA]))
    calls = r.json()["choices"][0]["message"]["tool_calls"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]

    history = [
        {"role": "user", "content": "weather? PARALLEL"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": [{"type": "text", "text": "rainy"}]},
    ]
    r = oa_post(client, oa, {"model": "m", "messages": history, "tools": [WEATHER_OA]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Tool results: sunny | rainy"

    # tool_choice none: plain text
    r = oa_post(client, oa, oa_body("hi", tools=[WEATHER_OA], tool_choice="none"))
    assert r.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "messages, needle",
    [
        ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c1", "content": "r"}], "preceeding"),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "user", "content": "y"},
            ],
            "did not have response messages: c1",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c2", "content": "r"},
            ],
            "'c2' not found",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "r"},
            ],
            "expected a string",
        ),
    ],
)
def test_openai_bad_tool_pairing(client, oa, messages, needle):
    r = oa_post(client, oa, {"model": "m", "messages": messages})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_anthropic_tool_use_and_results(client, an):
    r = an_post(client, an, an_body("weather? PARALLEL", tools=[WEATHER_AN]))
    msg = Message.model_validate(r.json())
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"city": "Paris"}, {"city": "Tokyo"}]
    history = [
        {"role": "user", "content": "weather? PARALLEL"},
        {"role": "assistant", "content": r.json()["content"]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
                {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "rainy"}]},
            ],
        },
    ]
    r = an_post(client, an, {"model": "m", "max_tokens": 9, "messages": history, "tools": [WEATHER_AN]})
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "Tool results: sunny | rainy"


def _an_use(tid: str) -> dict:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": tid, "name": "get_weather", "input": {}}]}


@pytest.mark.parametrize(
    "messages, needle",
    [
        (
            [{"role": "user", "content": "x"}, _an_use("t1"), {"role": "user", "content": "next"}],
            "without `tool_result`",
        ),
        (
            [
                {"role": "user", "content": "x"},
                _an_use("t1"),
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9"}]},
            ],
            "without `tool_result`",
        ),
        (
            [
                {"role": "user", "content": "x"},
                _an_use("t1"),
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "tool_result", "tool_use_id": "t1"}],
                },
            ],
            "must come first",
        ),
        (
            [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}],
            "unexpected `tool_use_id`",
        ),
        (
            [{"role": "user", "content": "x"}, _an_use("bad id!"), {"role": "user", "content": "y"}],
            "String should match",
        ),
    ],
)
def test_anthropic_bad_tool_pairing(client, an, messages, needle):
    r = an_post(client, an, {"model": "m", "max_tokens": 9, "messages": messages})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_gemini_function_calls_and_signatures(client, ge):
    ge.clear()
    r = ge_post(client, ge, ge_body("weather? PARALLEL", tools=[WEATHER_GE]))
    resp = gtypes.GenerateContentResponse.model_validate(r.json())
    assert resp.candidates[0].finish_reason == gtypes.FinishReason.STOP
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["args"] for p in parts] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert [p["thoughtSignature"] for p in parts] == list(GEMINI_THOUGHT_SIGNATURES)

    def follow_up(model_parts: list[dict]) -> httpx.Response:
        contents = [
            {"role": "user", "parts": [{"text": "weather? PARALLEL"}]},
            {"role": "model", "parts": model_parts},
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 20}}},
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 25}}},
                ],
            },
        ]
        return ge_post(client, ge, {"contents": contents, "tools": [WEATHER_GE]})

    r = follow_up(parts)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == 'Tool results: {"temp":20} | {"temp":25}'
    assert ge.last().thought_signatures == list(GEMINI_THOUGHT_SIGNATURES)

    unsigned = [{"functionCall": p["functionCall"]} for p in parts]
    r = follow_up(unsigned)
    assert r.status_code == 400 and "missing a thought_signature" in r.json()["error"]["message"]
    r = follow_up([{**unsigned[0], "thoughtSignature": "skip_thought_signature_validator"}, unsigned[1]])
    assert r.status_code == 200, r.text
    r = follow_up([{**unsigned[0], "thoughtSignature": "Zm9yZ2Vk"}, unsigned[1]])
    assert r.status_code == 400 and "Corrupted thought signature" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "contents, needle",
    [
        (
            [{"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}],
            "function response turn comes immediately after a function call turn",
        ),
        (
            [
                {"role": "user", "parts": [{"text": "x"}]},
                {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {}},
                            "thoughtSignature": GEMINI_THOUGHT_SIGNATURES[0],
                        }
                    ],
                },
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}] * 2},
            ],
            "number of function response parts",
        ),
        (
            [
                {"role": "user", "parts": [{"text": "x"}]},
                {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {}},
                            "thoughtSignature": GEMINI_THOUGHT_SIGNATURES[0],
                        }
                    ],
                },
                {"role": "user", "parts": [{"functionResponse": {"name": "other", "response": {}}}]},
            ],
            "name of each function response part",
        ),
        (
            [
                {"role": "user", "parts": [{"text": "x"}]},
                {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {}},
                            "thoughtSignature": GEMINI_THOUGHT_SIGNATURES[0],
                        }
                    ],
                },
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": "sunny"}}]},
            ],
            "google.protobuf.Struct",
        ),
    ],
)
def test_gemini_bad_pairing(client, ge, contents, needle):
    r = ge_post(client, ge, {"contents": contents})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


# ---------------------------------------------------------------------------------------------------- magic words


def test_magic_error(client, oa, an, ge):
    r = oa_post(client, oa, oa_body("ERROR 429"))
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = oa_post(client, oa, oa_body("ERROR 500"))
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    r = an_post(client, an, an_body("ERROR 529"))
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    r = an_post(client, an, an_body("ERROR 429"))
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"
    r = ge_post(client, ge, ge_body("ERROR 429"))
    assert r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert r.headers["retry-after"] == "7"
    r = ge_post(client, ge, ge_body("ERROR 503"))
    assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE"


def test_magic_sleep(client, oa):
    t0 = time.monotonic()
    r = oa_post(client, oa, oa_body("SLEEP 0.3"))
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.3


def test_magic_length(client, oa, an, ge):
    r = oa_post(client, oa, oa_body("LENGTH"))
    assert r.json()["choices"][0]["finish_reason"] == "length"
    r = an_post(client, an, an_body("LENGTH"))
    assert r.json()["stop_reason"] == "max_tokens"
    r = ge_post(client, ge, ge_body("LENGTH"))
    assert r.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_magic_html500_badjson_stopseq(client, oa, an, ge):
    r = oa_post(client, oa, oa_body("HTML500"))
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html") and b"<html>" in r.content
    r = an_post(client, an, an_body("BADJSON"))
    assert r.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    r = an_post(client, an, an_body("STOPSEQ"))
    assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("stop_sequence", "END")
    r = oa_post(client, oa, oa_body("STOPSEQ"))
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = ge_post(client, ge, ge_body("STOPSEQ"))
    assert r.json()["candidates"][0]["finishReason"] == "STOP"


# ---------------------------------------------------------------------------------------------------- streaming


def test_openai_stream(client, oa):
    body = oa_body("stream me", stream=True, stream_options={"include_usage": True})
    r = oa_post(client, oa, body)
    assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [d for _, d in sse_events(r.content)]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from mock openai. You said: stream me"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 18

    # tool calls: id/name first, then argument fragments; no usage chunk without include_usage
    r = oa_post(client, oa, oa_body("x PARALLEL", stream=True, tools=[WEATHER_OA]))
    chunks = [ChatCompletionChunk.model_validate_json(d) for _, d in sse_events(r.content)[:-1]]
    assert all(c.choices for c in chunks)
    args: dict[int, str] = {}
    frags = 0
    for c in chunks:
        for tc in c.choices[0].delta.tool_calls or []:
            if tc.id:
                assert tc.function.name == "get_weather" and tc.index not in args
                args[tc.index] = ""
            args[tc.index] += tc.function.arguments or ""
            frags += bool(tc.function.arguments)
    assert {i: orjson.loads(a) for i, a in args.items()} == {0: {"city": "Paris"}, 1: {"city": "Tokyo"}}
    assert frags >= 4
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_anthropic_stream(client, an):
    r = an_post(client, an, an_body("stream me", stream=True))
    assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
    adapter = TypeAdapter(RawMessageStreamEvent)
    events = sse_events(r.content)
    types = [e for e, _ in events]
    assert types[:3] == ["message_start", "ping", "content_block_start"]
    assert types[-2:] == ["message_delta", "message_stop"]
    parsed = [adapter.validate_json(d) for e, d in events if e != "ping"]
    assert all(p.type == e for p, (e, _) in zip(parsed, [x for x in events if x[0] != "ping"], strict=True))
    assert parsed[0].message.usage.input_tokens == 11
    text = "".join(p.delta.text for p in parsed if p.type == "content_block_delta")
    assert text == "Hello from mock anthropic. You said: stream me"
    assert parsed[-2].delta.stop_reason == "end_turn" and parsed[-2].usage.output_tokens == 7

    r = an_post(client, an, an_body("x", stream=True, tools=[WEATHER_AN]))
    parsed = [adapter.validate_json(d) for e, d in sse_events(r.content) if e != "ping"]
    partial = [p.delta.partial_json for p in parsed if p.type == "content_block_delta"]
    assert len([x for x in partial if x]) >= 2 and orjson.loads("".join(partial)) == {"city": "Paris"}
    assert parsed[-2].delta.stop_reason == "tool_use"


def test_gemini_stream(client, ge):
    r = ge_post(client, ge, ge_body("stream me"), stream=True)
    assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
    assert b"\r\n\r\n" in r.content
    chunks = [gtypes.GenerateContentResponse.model_validate_json(d) for _, d in sse_events(r.content)]
    assert len(chunks) >= 3
    assert "".join(c.text for c in chunks) == "Hello from mock gemini. You said: stream me"
    assert chunks[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 18
    assert all(c.usage_metadata is None for c in chunks[:-1])

    r = ge_post(client, ge, ge_body("x", tools=[WEATHER_GE]), stream=True)
    chunks = [orjson.loads(d) for _, d in sse_events(r.content)]
    part = chunks[-1]["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}} and part["thoughtSignature"]


def test_slowstream(oa):
    with (
        httpx.Client(timeout=10) as c,
        c.stream("POST", f"{oa.base_url}/chat/completions", json=oa_body("SLOWSTREAM", stream=True), headers=OA_H) as r,
    ):
        first_at = None
        for line in r.iter_lines():
            if line.startswith("data:") and first_at is None:
                first_at = time.monotonic()
    rec = oa.last()
    assert rec.stream_started_at is not None and rec.stream_finished_at is not None
    assert first_at < rec.stream_finished_at
    assert rec.stream_finished_at - rec.stream_started_at >= 0.3 * 4


def _first_text(kind: str, data: str) -> str:
    obj = orjson.loads(data)
    if kind == "openai":
        return obj["choices"][0]["delta"].get("content") or ""
    if kind == "anthropic":
        return obj.get("delta", {}).get("text", "")
    return "".join(p.get("text", "") for p in obj["candidates"][0]["content"]["parts"])


DROPS = [
    ("openai", "/chat/completions", oa_body("DROPSTREAM", stream=True), OA_H),
    ("anthropic", "/v1/messages", an_body("DROPSTREAM", stream=True), AN_H),
    ("gemini", "/v1beta/models/g:streamGenerateContent?alt=sse", ge_body("DROPSTREAM"), GE_H),
]


@pytest.mark.parametrize(("kind", "path", "body", "headers"), DROPS)
def test_dropstream(request, kind, path, body, headers):
    """The stream is cut right after its first text event, without the chunked terminator."""
    m = request.getfixturevalue({"openai": "oa", "anthropic": "an", "gemini": "ge"}[kind])
    got = b""
    with (
        httpx.Client(timeout=10) as c,
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        c.stream("POST", m.base_url + path, json=body, headers=headers) as r,
    ):
        for chunk in r.iter_raw():
            got += chunk
    events = sse_events(got)
    texts = [_first_text(kind, d) for _, d in events]
    assert texts[-1] and not any(texts[:-1]), texts  # the last event is the first with text
    assert f"Hello from mock {kind}".startswith(texts[-1])
    rec = m.last()
    assert rec.stream_finished_at is not None and rec.stream_finished_at >= rec.stream_started_at


@pytest.mark.parametrize(("kind", "path", "body", "headers"), DROPS)
def test_dropstream_held_until_released(request, kind, path, body, headers):
    """After hold_drop(), the cut waits (connection open, text delivered) until the test releases it."""
    m = request.getfixturevalue({"openai": "oa", "anthropic": "an", "gemini": "ge"}[kind])
    gate = m.hold_drop()
    got = b""
    with (
        httpx.Client(timeout=10) as c,
        pytest.raises(httpx.RemoteProtocolError),
        c.stream("POST", m.base_url + path, json=body, headers=headers) as r,
    ):
        for chunk in r.iter_raw():
            got += chunk
            if any(_first_text(kind, d) for _, d in sse_events(got)):
                assert m.last().stream_finished_at is None  # still open: the mock waits for the gate
                gate.set()
    assert gate.is_set() and m.last().stream_finished_at is not None


def test_keepalive_many_requests(oa):
    with httpx.Client(timeout=10) as c:
        for i in range(20):
            assert oa_post(c, oa, oa_body(f"n{i}")).status_code == 200
    assert oa.last().body["messages"][0]["content"] == "n19"


def test_last_and_clear():
    m = MockProvider("openai", "k")
    with pytest.raises(AssertionError):
        m.last()
    m.start()
    try:
        httpx.post(f"{m.base_url}/chat/completions", json=oa_body("x"), headers={"authorization": "Bearer k"})
        assert m.last().status == 200
        m.clear()
        assert m.requests == []
    finally:
        m.stop()


# ---------------------------------------------------------------------------------------------------- official SDKs


def test_official_sdks_parse(oa, an, ge):
    oc = openai.OpenAI(base_url=oa.base_url, api_key=OA_KEY, max_retries=0)
    cc = oc.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "sdk"}])
    assert cc.choices[0].message.content.endswith("sdk")
    chunks = list(
        oc.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "sdk"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("sdk")

    ac = anthropic.Anthropic(base_url=an.base_url, api_key=AN_KEY, max_retries=0)
    msg = ac.messages.create(model="claude-mock", max_tokens=10, messages=[{"role": "user", "content": "sdk"}])
    assert msg.content[0].text.endswith("sdk")
    with ac.messages.stream(model="claude-mock", max_tokens=10, messages=[{"role": "user", "content": "sdk"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text.endswith("sdk") and final.usage.output_tokens == 7

    gc = genai.Client(api_key=GE_KEY, http_options={"base_url": ge.base_url, "api_version": "v1beta"})
    resp = gc.models.generate_content(model="gemini-mock", contents="sdk")
    assert resp.text.endswith("sdk")
    text = "".join(c.text or "" for c in gc.models.generate_content_stream(model="gemini-mock", contents="sdk"))
    assert text.endswith("sdk")


# ---------------------------------------------------------------------------------------------------- SDK request types
# Each mock checks a request against the official SDK's own request types after its hand-written checks. Each body below
# passes the hand-written checks (the mocks accepted it before the SDK types were added) and is malformed by the SDK
# types themselves, which the test asks first, so the mock's refusal is the SDK types' verdict and not a restatement.


def _sdk_refuses(validate) -> bool:  # type: ignore[no-untyped-def]
    from tests.mocks.server import SdkTypeError, check_sdk_types

    try:
        check_sdk_types(validate, "probe")
    except SdkTypeError:
        return True
    return False


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"seed": "3"}, "seed"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"tools": [WEATHER_OA], "tool_choice": {"type": "function", "function": {"name": 5}}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": "x", "name": "n"}], "logit_bias": {"50256": "high"}}, "logit_bias"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": "yes"}}},
            "response_format.json_schema.strict",
        ),
    ],
)
def test_openai_refuses_what_the_sdk_types_refuse(client, oa, fields, where):
    from openai.types.chat import completion_create_params as p

    body = oa_body("x", **fields)
    adapter = TypeAdapter(
        p.CompletionCreateParamsStreaming if body.get("stream") else p.CompletionCreateParamsNonStreaming
    )
    assert _sdk_refuses(lambda: adapter.validate_python(body, strict=True))
    r = oa_post(client, oa, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"].startswith(where), err
    assert "completion_create_params" in err["message"]


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ({"tools": [WEATHER_AN], "tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}}, "tool_choice"),
        ({"system": [{"type": "text", "text": "s", "cache_control": {"type": "forever"}}]}, "system.0.cache_control"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "citations": "none"}]}]},
            "messages.0.content.0.citations",
        ),
    ],
)
def test_anthropic_refuses_what_the_sdk_types_refuse(client, an, fields, where):
    from anthropic.types import message_create_params as p

    body = an_body("x", **fields)
    adapter = TypeAdapter(p.MessageCreateParamsNonStreaming)
    assert _sdk_refuses(lambda: adapter.validate_python(body, strict=True))
    r = an_post(client, an, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"].startswith(where), err
    assert "anthropic.types.MessageCreateParamsNonStreaming" in err["message"]


@pytest.mark.parametrize(
    ("fields", "model", "where"),
    [
        ({"generationConfig": {"stopSequences": [1]}}, gtypes.GenerationConfig, "generationConfig.stopSequences.0"),
        (
            {"generationConfig": {"thinkingConfig": {"includeThoughts": "yes"}}},
            gtypes.GenerationConfig,
            "generationConfig.thinkingConfig.includeThoughts",
        ),
        ({"generationConfig": {"responseMimeType": 5}}, gtypes.GenerationConfig, "generationConfig.responseMimeType"),
        (
            {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": "get_weather"}}},
            gtypes.ToolConfig,
            "toolConfig.functionCallingConfig.allowedFunctionNames",
        ),
    ],
)
def test_gemini_refuses_what_the_sdk_types_refuse(client, ge, fields, model, where):
    body = ge_body("x", **fields)
    part = next(iter(fields.values()))
    assert _sdk_refuses(lambda: model.model_validate_json(orjson.dumps(part), strict=True))
    r = ge_post(client, ge, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and f"Invalid value at '{where}" in err["message"], err
    assert f"google.genai.types.{model.__name__}" in err["message"]


PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # a 1x1 PNG
)


def test_openai_accepts_a_rich_request_built_by_the_sdk(oa):
    oa.clear()
    cl = openai.OpenAI(base_url=oa.base_url, api_key=OA_KEY, max_retries=0)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
        {
            "role": "user",
            "name": "bob",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    cc = cl.chat.completions.create(
        model="gpt-mock", messages=messages, tools=[WEATHER_OA], tool_choice="auto", parallel_tool_calls=False,
        temperature=0.5, top_p=0.9, max_completion_tokens=50, seed=3, stop=["zz"], user="u", n=1,
        presence_penalty=0.1, frequency_penalty=0.2, metadata={"k": "v"}, reasoning_effort="low",
    )  # fmt: skip
    assert cc.choices[0].message.content == "Tool results: sunny"
    sent = oa.last()
    assert sent.status == 200 and sent.body["tools"] == [WEATHER_OA] and sent.body["seed"] == 3
    with cl.chat.completions.create(
        model="gpt-mock", messages=messages[:3], stream=True, stream_options={"include_usage": True},
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
    ) as s:  # fmt: skip
        assert [c for c in s if c.usage] and oa.last().status == 200


def test_anthropic_accepts_a_rich_request_built_by_the_sdk(an):
    cl = anthropic.Anthropic(base_url=an.base_url, api_key=AN_KEY, max_retries=0)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    msg = cl.messages.create(
        model="claude-mock", max_tokens=2048, messages=messages, tools=[WEATHER_AN],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True}, metadata={"user_id": "u"},
        stop_sequences=["zz"], system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
    )  # fmt: skip
    assert msg.content[0].text == "Tool results: sunny" and an.last().status == 200
    with cl.messages.stream(
        model="claude-mock", max_tokens=2048, messages=messages[:1], thinking={"type": "enabled", "budget_tokens": 1024}
    ) as s:
        assert s.get_final_message().content[0].type == "thinking" and an.last().status == 200
    counted = cl.messages.count_tokens(model="claude-mock", messages=messages, tools=[WEATHER_AN])
    assert counted.input_tokens == 5 and an.last().status == 200


def test_gemini_accepts_a_rich_request_built_by_the_sdk(ge):
    gc = genai.Client(api_key=GE_KEY, http_options={"base_url": ge.base_url, "api_version": "v1beta"})
    decl = gtypes.FunctionDeclaration(
        name="get_weather", description="Weather for a city",
        parameters=gtypes.Schema(type="OBJECT", properties={"city": gtypes.Schema(type="STRING")}, required=["city"]),
    )  # fmt: skip
    config = gtypes.GenerateContentConfig(
        system_instruction="be brief",
        tools=[gtypes.Tool(function_declarations=[decl])],
        tool_config=gtypes.ToolConfig(function_calling_config=gtypes.FunctionCallingConfig(mode="AUTO")),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        temperature=0.5, top_p=0.9, top_k=3, max_output_tokens=50, stop_sequences=["zz"], candidate_count=1, seed=3,
        thinking_config=gtypes.ThinkingConfig(include_thoughts=True, thinking_budget=128),
        safety_settings=[gtypes.SafetySetting(category="HARM_CATEGORY_HARASSMENT", threshold="BLOCK_NONE")],
    )  # fmt: skip
    contents = [
        gtypes.Content(
            role="user",
            parts=[
                gtypes.Part(text="look"),
                gtypes.Part.from_bytes(data=base64.b64decode(PNG_1PX), mime_type="image/png"),
            ],
        )
    ]
    resp = gc.models.generate_content(model="gemini-mock", contents=contents, config=config)
    assert resp.function_calls and ge.last().status == 200
    assert gc.models.count_tokens(model="gemini-mock", contents=contents).total_tokens == 5
    assert ge.last().status == 200
