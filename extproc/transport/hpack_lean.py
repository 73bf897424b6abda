"""An HPACK decoder (RFC 7541) for ``grpc_wire`` when tracing is on: the ``hpack`` package's behaviour, less Python.

With tracing, Envoy sends every ext_proc stream's ``traceparent`` as a literal it adds to the HPACK table, so each
header block is new and changes the table: ``grpc_wire``'s memo of blocks never hits and every block is decoded. The
``hpack`` package spent ~45 us per block of Envoy's (a logging call, a tuple subclass and a memoryview slice per
field, no cache for Huffman strings); this decoder does the same work in ~10 us (``docs/tracing.md``). It is used only
by servers made with ``metadata`` (tracing); without, ``grpc_wire`` keeps ``hpack.Decoder``.

Same interface as far as ``grpc_wire`` uses it (``decode(block, raw=True)``, ``max_header_list_size``,
``header_table.dynamic_entries`` and ``.maxsize``) and the same faults, raised as ``hpack``'s own exceptions: an index
out of range or 0, a truncated block, an integer longer than 5 octets, bad Huffman, a table size update after a field
or above the allowed size, a header list over ``max_header_list_size``. ``tests/unit/test_hpack_lean.py`` checks it
against ``hpack.Decoder`` on blocks from ``hpack.Encoder`` and on malformed ones.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

_STATIC = HeaderTable.STATIC_TABLE
_NSTATIC = len(_STATIC)
_VARINT_MAX = 5  # octets of an integer, prefix included (as ``hpack``)


class LeanDecoder:
    __slots__ = ("_huffman", "_size", "dynamic_entries", "max_allowed_table_size", "max_header_list_size", "maxsize")

    def __init__(self) -> None:
        self.dynamic_entries: deque[tuple[bytes, bytes]] = deque()  # newest first (index 62)
        self.maxsize = HeaderTable.DEFAULT_SIZE
        self.max_allowed_table_size = HeaderTable.DEFAULT_SIZE
        self.max_header_list_size = 2**16
        self._size = 0
        self._huffman: dict[bytes, bytes] = {}  # Huffman strings seen (Envoy's :path on every block): bounded

    @property
    def header_table(self) -> LeanDecoder:
        return self

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        n = len(data)
        i = 0
        inflated = 0
        while i < n:
            b = data[i]
            if b & 0x80:  # indexed field
                idx, i = _integer(data, i, 0x7F)
                header = self._get(idx)
            elif b & 0x40 or not b & 0x20:  # a literal, with incremental indexing (01) or without (0000, 0001)
                index = b & 0x40
                mask = 0x3F if index else 0x0F
                if b & mask:
                    idx, i = _integer(data, i, mask)
                    name = self._get(idx)[0]
                else:
                    name, i = self._string(data, i + 1)
                value, i = self._string(data, i)
                header = (name, value)
                if index:
                    self._add(name, value)
            else:  # dynamic table size update (001)
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                size, i = _integer(data, i, 0x1F)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.maxsize = size
                self._shrink()
                continue
            headers.append(header)
            inflated += len(header[0]) + len(header[1]) + 32
            if inflated > self.max_header_list_size:
                raise OversizedHeaderListError(
                    f"A header list larger than {self.max_header_list_size} has been received"
                )
        return headers

    def _get(self, idx: int) -> tuple[bytes, bytes]:
        if 0 < idx <= _NSTATIC:
            return _STATIC[idx - 1]
        j = idx - _NSTATIC - 1
        if idx <= 0 or j >= len(self.dynamic_entries):
            raise HPACKDecodingError(f"Invalid table index {idx}")
        return self.dynamic_entries[j]

    def _string(self, data: bytes, i: int) -> tuple[bytes, int]:
        if i >= len(data):
            raise HPACKDecodingError("Truncated header block")
        huffman = data[i] & 0x80
        length, i = _integer(data, i, 0x7F)
        end = i + length
        if end > len(data):
            raise HPACKDecodingError("Truncated header block")
        s = data[i:end]
        if huffman:
            decoded = self._huffman.get(s)
            if decoded is None:
                decoded = decode_huffman(s)
                if len(s) <= 256:
                    if len(self._huffman) >= 256:
                        self._huffman.clear()
                    self._huffman[s] = decoded
            s = decoded
        return s, end

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        if size > self.maxsize:  # larger than the table: it empties the table (RFC 7541, 4.4)
            self.dynamic_entries.clear()
            self._size = 0
            return
        self.dynamic_entries.appendleft((name, value))
        self._size += size
        self._shrink()

    def _shrink(self) -> None:
        entries = self.dynamic_entries
        while self._size > self.maxsize:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + 32


def _integer(data: bytes, i: int, mask: int) -> tuple[int, int]:
    """An HPACK integer whose prefix is ``mask`` bits of ``data[i]``; (value, index after it)."""
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    start = i
    n = len(data)
    while True:
        if i >= n:
            raise HPACKDecodingError("Truncated header block")
        b = data[i]
        i += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if i - start + 1 > _VARINT_MAX:
            raise HPACKDecodingError("Variable integer representation is too long")
