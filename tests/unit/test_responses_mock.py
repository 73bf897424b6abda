"""Self-test of the strict Responses API mock (tests/mocks/responses_provider.py), driven by the official SDK and
plain httpx (no Envoy): it must refuse what the real API refuses, and what it answers must be what the SDK parses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from tests.mocks.responses_provider import COUNT_TOKENS, REASONING_TOKENS, ResponsesMock, encrypted_for

KEY = "sk-responses-mock"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "strict": None, "parameters": WEATHER}]
CLIENTS = Path(__file__).resolve().parents[1] / "fixtures" / "clients"


@pytest.fixture(scope="module")
def mock() -> Iterator[ResponsesMock]:
    m = ResponsesMock(KEY).start()
    yield m
    m.stop()


@pytest.fixture
def client(mock: ResponsesMock) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.base_url, api_key=KEY, max_retries=0)


def post(mock: ResponsesMock, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{mock.base_url}/responses", json=body, headers={"authorization": f"Bearer {key}"})


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "m", "input": "x", "bogus": 1}, 400, "bogus", "unknown_parameter"),
        (
            {"model": "m", "input": [{"role": "user", "content": "x", "extra": 1}]},
            400,
            "input[0].extra",
            "unknown_parameter",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
            400,
            "input[0].arguments",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
            400,
            "input[0].content[0].text",
            "invalid_type",
        ),
        ({"model": "m", "input": [{"type": "wat"}]}, 400, "input[0].type", "invalid_value"),
        ({"model": "m", "input": "x", "temperature": 3}, 400, "temperature", "decimal_above_max_value"),
        ({"model": "m", "input": "x", "max_output_tokens": 8}, 400, "max_output_tokens", "integer_below_min_value"),
        ({"model": "m", "input": "x", "stream_options": {"include_obfuscation": False}}, 400, "stream_options", None),
        (
            {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]},
            400,
            "input[0]",
            None,
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]},
            400,
            "input",
            None,
        ),
        (
            {
                "model": "m",
                "input": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "forged"}],
            },
            400,
            "input[0].encrypted_content",
            "invalid_encrypted_content",
        ),
        ({"model": "m", "input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, 404, "input[0]", None),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_nope"}]}, 404, "input[0]", None),
        (
            {"model": "m", "input": "x", "previous_response_id": "resp_nope"},
            400,
            "previous_response_id",
            "previous_response_not_found",
        ),
        (
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "bad name!", "parameters": {}, "strict": None}],
            },
            400,
            "tools[0].name",
            "invalid_value",
        ),
        ({"input": "x"}, 400, "model", "missing_required_parameter"),
    ],
)
def test_refuses_like_the_api(mock: ResponsesMock, body: dict, status: int, param: str, code: str | None) -> None:
    resp = post(mock, body)
    assert resp.status_code == status, resp.text
    err = error_of(resp)
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")


def test_auth_and_foreign_credentials(mock: ResponsesMock) -> None:
    assert post(mock, {"model": "m", "input": "x"}, key="wrong").status_code == 401
    resp = httpx.post(
        f"{mock.base_url}/responses",
        json={"model": "m", "input": "x"},
        headers={"authorization": f"Bearer {KEY}", "x-api-key": "leak"},
    )
    assert resp.status_code == 400 and "foreign" in error_of(resp)["message"]
    assert (
        httpx.post(f"{mock.base_url}/chat/completions", json={}, headers={"authorization": f"Bearer {KEY}"}).status_code
        == 404
    )


def test_answers_parse_with_the_sdk(client: openai.OpenAI) -> None:
    r = client.responses.create(model="m", input="hello", instructions="be brief", metadata={"a": "b"})
    assert r.output_text == "Hello from mock responses. You said: hello"
    assert r.instructions == "be brief" and r.metadata == {"a": "b"} and r.usage.total_tokens == 18
    calls = client.responses.create(model="m", input="weather PARALLEL", tools=TOOLS)
    assert [(o.type, json.loads(o.arguments)["city"]) for o in calls.output] == [
        ("function_call", "Paris"),
        ("function_call", "Tokyo"),
    ]
    cut = client.responses.create(model="m", input="LENGTH please")
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    refusal = client.responses.create(model="m", input="REFUSE")
    assert refusal.output[0].content[0].type == "refusal"


def test_reasoning_encrypted_and_replayed(client: openai.OpenAI, mock: ResponsesMock) -> None:
    r1 = client.responses.create(
        model="m",
        input="weather?",
        tools=TOOLS,
        store=False,
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    )
    rs, call = r1.output
    assert rs.type == "reasoning" and rs.encrypted_content == encrypted_for(rs.id, rs.summary[0].text)
    assert r1.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS
    items = [
        {"role": "user", "content": "weather?"},
        rs.model_dump(exclude_none=True),
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    r2 = client.responses.create(model="m", input=items, tools=TOOLS, store=False)
    assert r2.output_text == "Tool results: sunny"
    assert mock.stored.get(r1.id) is None  # store: false keeps nothing


def test_stream_grammar(client: openai.OpenAI) -> None:
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    with client.responses.stream(
        model="m", input="stream", tools=TOOLS, reasoning={"effort": "low", "summary": "auto"}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    seqs = [e.sequence_number for e in events]
    assert seqs == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
    for e in events:
        adapter.validate_python(e.model_dump())
    assert [o.type for o in final.output] == ["reasoning", "function_call"]


def test_stored_responses_and_previous_response_id(client: openai.OpenAI) -> None:
    r1 = client.responses.create(model="m", input="remember sesame")
    r2 = client.responses.create(model="m", input="which word?", previous_response_id=r1.id)
    assert r2.previous_response_id == r1.id
    assert client.responses.retrieve(r1.id).output_text == r1.output_text
    items = client.responses.input_items.list(r2.id)
    assert items.data[0].type == "message"
    client.responses.delete(r1.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r1.id)
    assert client.responses.input_tokens.count(model="m", input="hi").input_tokens == COUNT_TOKENS


def test_in_stream_failures(mock: ResponsesMock) -> None:
    for word, last in (("STREAMERROR", "error"), ("FAILSTREAM", "response.failed")):
        with httpx.stream(
            "POST",
            f"{mock.base_url}/responses",
            json={"model": "m", "input": word, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
        ) as resp:
            body = resp.read().decode()
        kinds = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
        assert kinds[-1] == last and "response.completed" not in kinds


def test_recorded_client_requests_are_accepted(mock: ResponsesMock) -> None:
    """Every request real clients sent (tests/fixtures/clients) passes the mock's validation, except turns that
    depend on the recording's own earlier answers (stored ids, encrypted content of that mock run)."""
    checked = 0
    for client in ("codex", "agents-sdk", "ai-sdk", "pydantic-ai"):
        for rec in json.loads((CLIENTS / client / "requests.json").read_text())["requests"]:
            body = rec["body"]
            if body.get("previous_response_id") or any(
                isinstance(i, dict) and i.get("type") in ("reasoning", "function_call", "function_call_output")
                for i in body.get("input") or ()
            ):
                continue
            resp = post(mock, {**body, "stream": False})
            assert resp.status_code == 200, (client, resp.text)
            checked += 1
    assert checked >= 20
