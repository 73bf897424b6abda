"""``hpack_lean.LeanDecoder`` against the ``hpack`` package's decoder: the same headers, the same table, the same
faults, on blocks from ``hpack.Encoder`` (every representation, Huffman or not, table size updates) and on arbitrary
bytes; and ``grpc_wire`` uses it only when it hands metadata over (tracing)."""

from __future__ import annotations

import hpack
import pytest
from hpack.exceptions import HPACKDecodingError, HPACKError
from hypothesis import given
from hypothesis import strategies as st

from extproc.transport import grpc_wire
from extproc.transport.hpack_lean import LeanDecoder

NAMES = [":path", ":method", "content-type", "traceparent", "x-forwarded-for", "te", "grpc-timeout", "x-custom"]
header = st.tuples(
    st.one_of(st.sampled_from(NAMES), st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)),
    st.text(max_size=60),
    st.booleans(),  # sensitive: never indexed
)
block_spec = st.tuples(
    st.lists(header, max_size=12),
    st.booleans(),  # Huffman
    st.one_of(st.none(), st.integers(0, 4096)),  # a table size update before the block
)


def outcome(decoder, block: bytes):
    try:
        return [tuple(h) for h in decoder.decode(block, raw=True)]
    except HPACKError as exc:
        assert isinstance(exc, HPACKDecodingError)
        return "error"


def same_table(a: hpack.Decoder, b: LeanDecoder) -> None:
    assert list(a.header_table.dynamic_entries) == list(b.header_table.dynamic_entries)
    assert a.header_table.maxsize == b.header_table.maxsize


@given(st.lists(block_spec, min_size=1, max_size=8))
def test_blocks_from_the_hpack_encoder_decode_the_same(blocks) -> None:
    enc = hpack.Encoder()
    ours, theirs = LeanDecoder(), hpack.Decoder()
    for headers, huffman, resize in blocks:
        if resize is not None:
            enc.header_table_size = resize
        fields = [hpack.NeverIndexedHeaderTuple(n, v) if sensitive else (n, v) for n, v, sensitive in headers]
        block = enc.encode(fields, huffman=huffman)
        got = outcome(ours, block)
        assert got == outcome(theirs, block)
        assert got == [(n.encode(), v.encode()) for n, v, _ in headers]
        same_table(theirs, ours)


@given(st.lists(st.binary(max_size=80), min_size=1, max_size=6))
def test_arbitrary_bytes_give_the_same_headers_or_the_same_fault(blocks) -> None:
    ours, theirs = LeanDecoder(), hpack.Decoder()
    for block in blocks:
        got = outcome(ours, block)
        assert got == outcome(theirs, block)
        if got == "error":
            return  # a connection ends at its first bad block: the tables need not agree after one
        same_table(theirs, ours)


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xff\x80\x80\x80\x80\x01",  # an integer longer than 5 octets
        b"\xbf",  # an index past the (empty) dynamic table
        b"\x40\x85ab",  # a name literal longer than the block
        b"\x82\x20",  # a table size update after a field
        b"\x3f\xe2\x1f",  # a table size update to 4097, above 4096
        b"\x40\x81\xff\x00",  # bad Huffman (EOS)
    ],
)
def test_faults_are_hpack_errors(block: bytes) -> None:
    with pytest.raises(HPACKDecodingError):
        LeanDecoder().decode(block)
    assert outcome(hpack.Decoder(), block) == "error"


def test_header_list_limit() -> None:
    block = hpack.Encoder().encode([("x-big", "v" * 200)])
    ours, theirs = LeanDecoder(), hpack.Decoder()
    ours.max_header_list_size = theirs.max_header_list_size = 100
    assert outcome(ours, block) == outcome(theirs, block) == "error"


def test_grpc_wire_uses_it_only_with_tracing() -> None:
    assert isinstance(grpc_wire.Connection(grpc_wire.Server(lambda path: None)).decoder, hpack.Decoder)
    traced = grpc_wire.Server(lambda path, meta: None, metadata=("traceparent",))
    assert isinstance(grpc_wire.Connection(traced).decoder, LeanDecoder)
