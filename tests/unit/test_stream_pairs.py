"""Streams as transducers, for all 9 provider x client pairs, on recorded provider streams: provider bytes cut at
random points (down to one byte) give exactly the client bytes of the uncut stream, and the client stream carries
what the recorded one did (read back by this test's own minimal readers, not by the product's decoders)."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.translation import canonical as c
from extproc.translation.formats import registry
from tests.golden.harness import recorded_bytes

# The client formats whose output this test reads back with its own readers (below).
FORMATS = {name: registry.get(name) for name in ("openai", "anthropic", "gemini")}
_IDS = re.compile(rb"call_[0-9a-f]{32}|msg_[0-9a-f]{24}|chatcmpl-[0-9a-f]{32}|\"responseId\":\"[0-9a-f]{24}\"")


def _pa(file: str, i: int = 0) -> dict[str, Any]:
    return {"source": "pydantic-ai", "file": file, "interaction": i}


_GROQ = "models/cassettes/test_groq/test_tool_use_failed_error_streaming.yaml"
# Recorded provider streams (tests/fixtures/recorded/*/README.md): name -> (provider format, recording, sse).
STREAMS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "openai-text": (
        "openai",
        {"source": "envoy-ai-gateway", "file": "cassettes/chat-streaming.yaml", "interaction": 0},
        True,
    ),
    "openai-tool-call": (
        "openai",
        _pa("models/cassettes/test_openai/test_run_stream_sync_streams_real_model.yaml"),
        True,
    ),
    "openai-reasoning": ("openai", _pa(_GROQ, 1), True),
    "openai-error": ("openai", _pa(_GROQ, 0), True),
    "anthropic-text": (
        "anthropic",
        _pa("models/cassettes/test_anthropic/test_request_stream_fallback_for_high_max_tokens.yaml"),
        True,
    ),
    "anthropic-tool-call": (
        "anthropic",
        _pa("cassettes/test_tool_search/test_anthropic_native_tool_search_streaming.yaml"),
        True,
    ),
    "anthropic-thinking": (
        "anthropic",
        _pa("models/cassettes/test_anthropic/test_anthropic_model_thinking_part_stream.yaml"),
        True,
    ),
    "anthropic-redacted": (
        "anthropic",
        _pa("models/cassettes/test_anthropic/test_anthropic_model_thinking_part_redacted_stream.yaml"),
        True,
    ),
    "gemini-text": ("gemini", _pa("models/cassettes/test_google/test_google_model_stream.yaml"), True),
    "gemini-tool-call": (
        "gemini",
        _pa("models/cassettes/test_google/test_google_streaming_tool_call_thought_signature.yaml"),
        True,
    ),
    "gemini-thinking": ("gemini", _pa("models/cassettes/test_google/test_google_model_thinking_part_iter.yaml"), True),
    "gemini-json-array": (
        "gemini",
        {
            "source": "kong",
            "files": [
                "unit/streaming-chunk-formats/partial-json-beginning/input.bin",
                "unit/streaming-chunk-formats/partial-json-end/input.bin",
            ],
        },
        False,
    ),
}
CLIENTS = list(FORMATS)
CASES = [(name, client) for name in STREAMS for client in CLIENTS]


@functools.cache
def wire(name: str) -> bytes:
    return recorded_bytes(STREAMS[name][1])


def transduce(name: str, client: str, data: bytes, cuts: list[int]) -> bytes:
    provider, _, sse = STREAMS[name]
    dec = FORMATS[provider].StreamDecoder(sse=False) if not sse else FORMATS[provider].StreamDecoder()
    enc = FORMATS[client].StreamEncoder(model="client-model", include_usage=True)
    out: list[bytes] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        for ev in dec.feed(data[prev:cut]):
            out.append(enc.error(ev.error) if isinstance(ev, c.StreamError) else enc.encode(ev))
        prev = cut
    for ev in dec.close():
        out.append(enc.error(ev.error) if isinstance(ev, c.StreamError) else enc.encode(ev))
    out.append(enc.finish())
    return _IDS.sub(b"ID", b"".join(out))


@pytest.mark.parametrize(("name", "client"), CASES)
@given(data=st.data())
def test_any_cut_gives_the_same_client_stream(name: str, client: str, data: st.DataObject) -> None:
    raw = wire(name)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=60))
    assert transduce(name, client, raw, cuts) == transduce(name, client, raw, [])


@pytest.mark.parametrize(("name", "client"), CASES)
def test_one_byte_chunks(name: str, client: str) -> None:
    raw = wire(name)
    assert transduce(name, client, raw, list(range(len(raw)))) == transduce(name, client, raw, [])


# ---------------------------------------------------------------------------------------------------------------------
# What the client stream carries, read by minimal readers of each client grammar (independent of the product)
# ---------------------------------------------------------------------------------------------------------------------
def _data_lines(raw: bytes) -> list[Any]:
    out = []
    for line in raw.splitlines():
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            out.append(json.loads(line[5:]))
    return out


def read_openai(raw: bytes) -> dict[str, Any]:
    text, calls, finish, usage, errors = "", {}, None, None, []
    for chunk in _data_lines(raw):
        if "error" in chunk:
            errors.append(chunk["error"])
            continue
        if chunk.get("usage"):
            usage = (chunk["usage"]["prompt_tokens"], chunk["usage"]["completion_tokens"])
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"name": "", "arguments": ""})
                fn = call.get("function") or {}
                entry["name"] += fn.get("name") or ""
                entry["arguments"] += fn.get("arguments") or ""
            finish = choice["finish_reason"] or finish
    tools = [(v["name"], json.loads(v["arguments"])) for _, v in sorted(calls.items())]
    return {"text": text, "tools": tools, "finish": finish, "usage": usage, "errors": errors}


def read_anthropic(raw: bytes) -> dict[str, Any]:
    text, blocks, finish, errors = "", {}, None, []
    usage = [0, 0]
    for ev in _data_lines(raw):
        kind = ev["type"]
        if kind == "message_start":
            usage[0] = ev["message"]["usage"]["input_tokens"] or usage[0]
        elif kind == "content_block_start" and ev["content_block"]["type"] == "tool_use":
            blocks[ev["index"]] = [ev["content_block"]["name"], ""]
        elif kind == "content_block_delta":
            delta = ev["delta"]
            if delta["type"] == "text_delta":
                text += delta["text"]
            elif delta["type"] == "input_json_delta":
                blocks[ev["index"]][1] += delta["partial_json"]
        elif kind == "message_delta":
            finish = ev["delta"]["stop_reason"]
            usage = [ev["usage"].get("input_tokens", usage[0]), ev["usage"]["output_tokens"]]
        elif kind == "error":
            errors.append(ev["error"])
    tools = [(n, json.loads(a or "{}")) for _, (n, a) in sorted(blocks.items())]
    return {"text": text, "tools": tools, "finish": finish, "usage": tuple(usage) if finish else None, "errors": errors}


def read_gemini(raw: bytes) -> dict[str, Any]:
    text, tools, finish, usage, errors = "", [], None, None, []
    for chunk in _data_lines(raw):
        if "error" in chunk:
            errors.append(chunk["error"])
            continue
        cand = chunk["candidates"][0]
        for part in cand["content"]["parts"]:
            if "functionCall" in part:
                tools.append((part["functionCall"]["name"], part["functionCall"]["args"]))
            elif not part.get("thought"):
                text += part.get("text", "")
        finish = cand.get("finishReason") or finish
        meta = chunk.get("usageMetadata")
        if meta:
            usage = (meta["promptTokenCount"], meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0))
    return {"text": text, "tools": tools, "finish": finish, "usage": usage, "errors": errors}


READERS = {"openai": read_openai, "anthropic": read_anthropic, "gemini": read_gemini}
FINISH = {
    "openai": {"stop": "stop", "tool_calls": "tool_calls"},
    "anthropic": {"stop": "end_turn", "tool_calls": "tool_use"},
    "gemini": {"stop": "STOP", "tool_calls": "STOP"},
}

# What the recordings hold (read from the recorded bytes; see tests/fixtures/recorded/*/README.md).
CARRIED: dict[str, dict[str, Any]] = {
    "openai-tool-call": {
        "text": "",
        "tools": [("get_capital", {"country": "UK"})],
        "finish": "tool_calls",
        "usage": (53, 15),
    },
    "anthropic-tool-call": {
        "text": "Let me search for a tool that can provide current exchange rate information."
        "I found the right tool! Let me fetch the current USD to EUR exchange rate for you.",
        "tools": [("get_exchange_rate", {"from_currency": "USD", "to_currency": "EUR"})],
        "finish": "tool_calls",
        "usage": (1591, 175),
    },
    "gemini-tool-call": {
        "text": "",
        "tools": [("get_country", {})],
        "finish": "tool_calls",
        "usage": (29, 212),
    },
    "anthropic-text": {"text": "2", "tools": [], "finish": "stop", "usage": (20, 5)},
    "gemini-text": {"text": "The capital of France is Paris.\n", "tools": [], "finish": "stop", "usage": (13, 8)},
}


@pytest.mark.parametrize(("name", "client"), [(n, cl) for n in CARRIED for cl in CLIENTS])
def test_client_stream_carries_what_was_recorded(name: str, client: str) -> None:
    """Text, whole tool calls (arguments as JSON), the finish reason in the client's vocabulary and the usage."""
    got = READERS[client](transduce(name, client, wire(name), []))
    want = CARRIED[name]
    assert got["errors"] == []
    assert got["text"] == want["text"]
    assert got["tools"] == want["tools"]
    assert got["finish"] == FINISH[client][want["finish"]]
    assert got["usage"] == want["usage"]


@pytest.mark.parametrize("client", CLIENTS)
def test_recorded_in_stream_error_reaches_the_client(client: str) -> None:
    """Groq's recorded ``event: error`` (tool_use_failed) ends the client stream with that error, message kept."""
    got = READERS[client](transduce("openai-error", client, wire("openai-error"), []))
    assert len(got["errors"]) == 1
    assert got["errors"][0]["message"].startswith("Tool call validation failed")
    assert got["text"] == "" and got["tools"] == []
