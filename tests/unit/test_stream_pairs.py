"""Streams as transducers, for all 9 provider x client pairs: provider bytes cut at random points (down to one byte)
give exactly the client bytes of the uncut stream, and the client output is that format's full grammar."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.translation import canonical as c
from extproc.translation.formats import anthropic, gemini, openai
from tests.paths import KONG

FORMATS = {"openai": openai, "anthropic": anthropic, "gemini": gemini}
_IDS = re.compile(rb"call_[0-9a-f]{20,32}|toolu_[0-9A-Za-z]{10,}|msg_[0-9A-Za-z]{10,}|chatcmpl-[0-9A-Za-z]{10,}")

EVENTS: list[c.Event] = [
    c.MessageStart("resp_1", "upstream-model", c.Usage(input_tokens=11)),
    c.TextDelta("Checking "),
    c.TextDelta("the weather…"),
    c.ToolCallStart(0, "call_a", "get_weather"),
    c.ToolCallDelta(0, '{"city": '),
    c.ToolCallDelta(0, '"Paris"}'),
    c.ToolCallStart(1, "call_b", "get_weather"),
    c.ToolCallDelta(1, '{"city": "Tokyo"}'),
    c.Finish("tool_calls"),
    c.UsageUpdate(c.Usage(input_tokens=11, output_tokens=7)),
]


def provider_stream(name: str) -> bytes:
    """What a provider of this format sends for EVENTS (its own encoder speaks its grammar; Gemini in SSE mode)."""
    enc = FORMATS[name].StreamEncoder(model="upstream-model", include_usage=True)
    return b"".join(enc.encode(e) for e in EVENTS) + enc.finish()


def transduce(provider: str, client: str, data: bytes, cuts: list[int]) -> bytes:
    dec = FORMATS[provider].StreamDecoder()
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


PAIRS = [(p, cl) for p in FORMATS for cl in FORMATS]


@pytest.mark.parametrize(("provider", "client"), PAIRS)
@given(data=st.data())
def test_any_cut_gives_the_same_client_stream(provider: str, client: str, data: st.DataObject) -> None:
    wire = provider_stream(provider)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(wire)), max_size=60))
    assert transduce(provider, client, wire, cuts) == transduce(provider, client, wire, [])


@pytest.mark.parametrize(("provider", "client"), PAIRS)
def test_one_byte_chunks(provider: str, client: str) -> None:
    wire = provider_stream(provider)
    assert transduce(provider, client, wire, list(range(len(wire)))) == transduce(provider, client, wire, [])


@pytest.mark.parametrize(("provider", "client"), PAIRS)
def test_client_stream_carries_everything(provider: str, client: str) -> None:
    """Re-decoding the client's stream gives back the text, both whole tool calls, the finish reason and usage."""
    out = transduce(provider, client, provider_stream(provider), [])
    dec = FORMATS[client].StreamDecoder()
    events = dec.feed(out) + dec.close()
    text = "".join(e.text for e in events if isinstance(e, c.TextDelta))
    assert text == "Checking the weather…"
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, c.ToolCallStart):
            calls[e.index] = [e.name, ""]
        elif isinstance(e, c.ToolCallDelta):
            calls[e.index][1] += e.arguments
    assert [(n, json.loads(a)) for _, (n, a) in sorted(calls.items())] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    assert not any(isinstance(e, c.StreamError) for e in events)
    assert [e.reason for e in events if isinstance(e, c.Finish)] == ["tool_calls"]
    usage = c.Usage()
    for e in events:
        if isinstance(e, c.UsageUpdate | c.MessageStart) and e.usage is not None:
            c.merge_usage(usage, e.usage)
    assert (usage.input_tokens, usage.output_tokens) == (11, 7)


@pytest.mark.parametrize("client", list(FORMATS))
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40))
def test_recorded_openai_stream_any_cut(client: str, cuts: list[int]) -> None:
    wire = (KONG / "unit" / "real-stream-frames" / "openai" / "llm-v1-chat.txt").read_bytes()
    cuts = [x % (len(wire) + 1) for x in cuts]
    assert transduce("openai", client, wire, cuts) == transduce("openai", client, wire, [])
