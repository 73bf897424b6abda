"""``hpack_lean.LeanDecoder`` against the ``hpack`` package's decoder: the same headers, the same table, the same
faults, on blocks from ``hpack.Encoder`` (every representation, Huffman or not, table size updates) and on arbitrary
bytes; and ``grpc_wire`` uses it only when it hands metadata over (tracing). With tracing ``grpc_wire`` asks for no
HPACK table and reads each block after the first through ``Hole`` (the remembered block, another traceparent), whose
Huffman decoding (``hex_huffman``) is checked against the ``hpack`` package's."""

from __future__ import annotations

import hpack
import pytest
from hpack.exceptions import HPACKDecodingError, HPACKError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hypothesis import given
from hypothesis import strategies as st

from extproc.transport import grpc_wire
from extproc.transport.hpack_lean import LeanDecoder, hex_huffman

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


# ------------------------------------------------------------------------------------------------ tracing: Hole
HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
traceparent = st.builds(
    lambda t, s, f: f"00-{t:032x}-{s:016x}-{f:02x}",
    st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1), st.sampled_from([0, 1]),
)  # fmt: skip


@given(st.one_of(traceparent, st.text("0123456789abcdef-", max_size=80)))
def test_hex_huffman_decodes_what_the_hpack_encoder_wrote(text: str) -> None:
    data = HUFFMAN.encode(text.encode())
    assert hex_huffman(data) == text.encode() == decode_huffman(data)


def same_or_left_to_hpack(data: bytes) -> None:
    got = hex_huffman(data)  # None: not only traceparent characters, or bad padding (the general decoder decides)
    if got is not None:
        assert got == decode_huffman(data)


@given(st.binary(max_size=48))
def test_hex_huffman_gives_the_hpack_result_or_leaves_it_to_hpack(data: bytes) -> None:
    same_or_left_to_hpack(data)


@given(traceparent, st.integers(0, 10**6), st.sampled_from(["flip", "append-ones", "append-zeros", "drop"]))
def test_hex_huffman_on_damaged_traceparents(text: str, where: int, how: str) -> None:
    data = bytearray(HUFFMAN.encode(text.encode()))  # near misses: padding and codes at the edges
    if how == "flip":
        bit = where % (len(data) * 8)
        data[bit // 8] ^= 0x80 >> (bit % 8)
    elif how == "append-ones":
        data += b"\xff"  # 8 or more bits of padding: not valid
    elif how == "append-zeros":
        data += b"\x00"
    else:
        del data[-1]
    same_or_left_to_hpack(bytes(data))


ENVOY = [
    (":method", "POST"), (":scheme", "http"), (":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
    (":authority", "extproc"), ("te", "trailers"), ("content-type", "application/grpc"),
    ("x-envoy-internal", "true"), ("x-forwarded-for", "127.0.0.1"),
]  # fmt: skip
PATH = ENVOY[2][1]


def traced_connection() -> grpc_wire.Connection:
    return grpc_wire.Connection(grpc_wire.Server(lambda path, meta: None, metadata=("traceparent",)))


class Counting(LeanDecoder):
    __slots__ = ("blocks",)

    def __init__(self) -> None:
        super().__init__()
        self.blocks = 0

    def decode(self, data: bytes, raw: bool = True, mark: bytes | None = None) -> list[tuple[bytes, bytes]]:
        self.blocks += 1
        return super().decode(data, raw, mark)


def counting(conn: grpc_wire.Connection) -> Counting:
    conn.decoder = Counting()
    conn.decoder.max_header_list_size = conn.limits.max_header_list
    return conn.decoder


def test_with_tracing_the_server_asks_for_no_hpack_table() -> None:
    def table_size(server: grpc_wire.Server) -> int | None:
        payload = server.preface[9 : 9 + int.from_bytes(server.preface[:3], "big")]
        return dict((int.from_bytes(payload[i : i + 2], "big"), int.from_bytes(payload[i + 2 : i + 6], "big"))
                    for i in range(0, len(payload), 6)).get(0x1)  # fmt: skip

    assert table_size(grpc_wire.Server(lambda path, meta: None, metadata=("traceparent",))) == 0
    assert table_size(grpc_wire.Server(lambda path: None)) is None  # without tracing: the default table, remembered


@given(st.lists(traceparent, min_size=2, max_size=6), st.booleans())
def test_blocks_but_for_the_traceparent_are_read_through_the_hole(parents: list[str], huffman: bool) -> None:
    enc = hpack.Encoder()
    enc.header_table_size = 0  # what Envoy's encoder does after our SETTINGS (its first block says so)
    conn = traced_connection()
    decoded = counting(conn)
    for tp in parents:
        block = enc.encode([*ENVOY, ("traceparent", tp), ("tracestate", "")], huffman=huffman)
        assert conn._path(block) == (PATH, None, {"traceparent": tp})
    # the first block (table size update) and the second (the first without it) are decoded; the others not
    assert decoded.blocks == 2


@given(st.lists(st.text(max_size=300), min_size=2, max_size=5), st.booleans())
def test_any_value_in_the_hole_reads_as_the_hpack_decoder_reads_it(values: list[str], huffman: bool) -> None:
    enc = hpack.Encoder()
    enc.header_table_size = 0
    conn = traced_connection()
    theirs = hpack.Decoder()
    for value in values:  # any length (a length of several octets too), any characters
        block = enc.encode([*ENVOY, ("traceparent", value)], huffman=huffman)
        expected = {n.decode(): v.decode("latin-1") for n, v in theirs.decode(block, raw=True)}["traceparent"]
        assert conn._path(block) == (PATH, None, {"traceparent": expected})


def test_a_block_that_differs_elsewhere_is_decoded() -> None:
    enc = hpack.Encoder()
    enc.header_table_size = 0
    conn = traced_connection()
    decoded = counting(conn)
    other = "/other.Service/Method"
    for i, path in enumerate((PATH, PATH, other, other, PATH)):
        tp = f"00-{i + 1:032x}-{i + 1:016x}-01"
        got = conn._path(enc.encode([*ENVOY[:2], (":path", path), ("traceparent", tp)]))
        assert got == (path, None, {"traceparent": tp})
    # the first (with the table size update), the one after it, a new :path, back to the first :path; not the
    # fourth, the third's bytes but for the traceparent
    assert decoded.blocks == 4


def test_with_an_hpack_table_in_use_blocks_are_decoded() -> None:
    enc = hpack.Encoder()  # Envoy before our SETTINGS reached it: a 4096-octet table, each traceparent indexed
    conn = traced_connection()
    decoded = counting(conn)
    for i in range(5):
        tp = f"00-{i + 1:032x}-{i + 1:016x}-01"
        assert conn._path(enc.encode([*ENVOY, ("traceparent", tp)])) == (PATH, None, {"traceparent": tp})
    assert decoded.blocks == 5 and conn.hole is None


def test_the_hole_is_left_while_the_peer_uses_a_table_again() -> None:
    enc = hpack.Encoder()
    conn = traced_connection()
    theirs = hpack.Decoder()
    for i, size in enumerate([0, 0, 0, 4096, 4096, 4096, 0, 0, 0]):  # the encoder's table: off, on, off
        enc.header_table_size = size
        block = enc.encode([*ENVOY, ("traceparent", f"00-{i + 1:032x}-{i + 1:016x}-01")])
        expected = {n.decode(): v.decode() for n, v in theirs.decode(block, raw=True)}
        assert conn._path(block) == (PATH, None, {"traceparent": expected["traceparent"]})
        assert (conn.decoder.header_table.maxsize == 0) == (size == 0)


@pytest.mark.parametrize("fault", ["huffman", "size"])
def test_faults_in_the_hole_are_compression_errors(fault: str) -> None:
    enc = hpack.Encoder()
    enc.header_table_size = 0
    conn = traced_connection()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for _ in range(2):
        conn._path(enc.encode([*ENVOY, ("traceparent", tp)]))
    assert conn.hole is not None
    decoded = counting(conn)  # a fresh decoder in the same state (table off), counting the blocks it decodes
    decoded.maxsize = 0
    block = enc.encode([*ENVOY, ("traceparent", tp)])
    if fault == "huffman":  # the value's last octet: padding that is not all ones (or a code of no symbol)
        end = len(block) - len(conn.hole.suffix)
        block = block[: end - 1] + b"\x00" + block[end:]
    else:
        conn.decoder.max_header_list_size = conn.hole.rest + len(tp) - 1
    with pytest.raises(grpc_wire._ConnError) as err:
        conn._path(block)
    assert err.value.code == grpc_wire.COMPRESSION_ERROR
    assert decoded.blocks == 0  # the hole found the fault itself, without decoding the block again
