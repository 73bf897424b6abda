"""The one incremental SSE parser (and Gemini's JSON-array parser): any cut, any framing, bounded memory."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from extproc.translation.sse import JSONArrayStreamParser, SSEEvent, SSEParser, encode_event

SAMPLE = (
    b": keep-alive comment\n\n"
    b'event: message_start\ndata: {"a": 1}\n\n'
    b"data:no-space\n\n"
    b"data: line one\ndata: line two\n\n"
    b"event: ping\r\ndata: {}\r\n\r\n"
    b"id: 7\nretry: 100\ndata: with id\n\n"
    b"data: [DONE]"
)
EXPECTED = [
    SSEEvent("message_start", '{"a": 1}'),
    SSEEvent(None, "no-space"),
    SSEEvent(None, "line one\nline two"),
    SSEEvent("ping", "{}"),
    SSEEvent(None, "with id"),
    SSEEvent(None, "[DONE]"),
]


def parse_in_pieces(data: bytes, cuts: list[int]) -> list[SSEEvent]:
    p = SSEParser()
    out: list[SSEEvent] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += p.feed(data[prev:cut])
        prev = cut
    return out + p.close()


def test_grammar_whole() -> None:
    assert parse_in_pieces(SAMPLE, []) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert parse_in_pieces(SAMPLE, list(range(len(SAMPLE)))) == EXPECTED


def test_cr_only_framing_split_between_cr_and_lf() -> None:
    data = b"data: a\r\n\r\ndata: b\r\r"
    assert parse_in_pieces(data, [8]) == [SSEEvent(None, "a"), SSEEvent(None, "b")]
    assert parse_in_pieces(data, [7, 8, 9, 10]) == [SSEEvent(None, "a"), SSEEvent(None, "b")]


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=40))
def test_any_cut_gives_the_same_events(cuts: list[int]) -> None:
    assert parse_in_pieces(SAMPLE, cuts) == EXPECTED


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")), max_size=8),
       st.lists(st.integers(min_value=0, max_value=2000), max_size=20), st.booleans())  # fmt: skip
def test_round_trip_of_encoded_events(datas: list[str], cuts: list[int], crlf: bool) -> None:
    wire = b"".join(encode_event(d.encode()) for d in datas)
    if crlf:
        wire = wire.replace(b"\n", b"\r\n")
    assert [e.data for e in parse_in_pieces(wire, [c % (len(wire) + 1) for c in cuts])] == datas


def test_memory_is_bounded_by_the_largest_event() -> None:
    p = SSEParser()
    event = b"data: " + b"x" * 1000 + b"\n\n"
    for _ in range(10_000):
        p.feed(event[:500])
        assert len(p.feed(event[500:])) == 1
        assert len(p._buf) == 0
    j = JSONArrayStreamParser()
    j.feed(b"[")
    for _ in range(10_000):
        assert len(j.feed(b'{"a": "' + b"y" * 1000 + b'"},\n')) == 1
        assert len(j._buf) < 10


ARRAY = orjson.dumps([{"a": '}]\\"{', "b": [1, {"c": None}]}, {"d": "\u00e9"}, {}], option=orjson.OPT_INDENT_2)


@given(st.lists(st.integers(min_value=0, max_value=len(ARRAY)), max_size=30))
def test_json_array_any_cut(cuts: list[int]) -> None:
    j = JSONArrayStreamParser()
    out: list[bytes] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(ARRAY)]:
        out += j.feed(ARRAY[prev:cut])
        prev = cut
    assert [orjson.loads(x) for x in out] == orjson.loads(ARRAY)
    assert not j.pending()
