"""An HPACK decoder (RFC 7541) for ``grpc_wire`` when tracing is on: the ``hpack`` package's behaviour, less Python.

With tracing, Envoy sends every ext_proc stream's ``traceparent`` as a literal it adds to the HPACK table, so each
header block is new and changes the table: ``grpc_wire``'s memo of blocks never hits and every block is decoded. The
``hpack`` package spent ~45 us per block of Envoy's (a logging call, a tuple subclass and a memoryview slice per
field, no cache for Huffman strings); this decoder does the same work in ~10 us (``docs/tracing.md``). It is used only
by servers made with ``metadata`` (tracing); without, ``grpc_wire`` keeps ``hpack.Decoder``. Such servers also tell
Envoy to keep no HPACK table (SETTINGS_HEADER_TABLE_SIZE 0): then its blocks differ only in the ``traceparent``, and
``Hole`` reads a block as the last one but for that value (~5 us: ``hex_huffman`` decodes it two or so characters a
step).

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
    __slots__ = (
        "_huffman", "_size", "dynamic_entries", "marked", "max_allowed_table_size", "max_header_list_size", "maxsize",
    )  # fmt: skip

    def __init__(self) -> None:
        self.dynamic_entries: deque[tuple[bytes, bytes]] = deque()  # newest first (index 62)
        self.maxsize = HeaderTable.DEFAULT_SIZE
        self.max_allowed_table_size = HeaderTable.DEFAULT_SIZE
        self.max_header_list_size = 2**16
        self._size = 0
        self._huffman: dict[bytes, bytes] = {}  # Huffman strings seen (Envoy's :path on every block): bounded
        self.marked: tuple[int, int] | None = None

    @property
    def header_table(self) -> LeanDecoder:
        return self

    def decode(self, data: bytes, raw: bool = True, mark: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """The block's header list. With ``mark``, ``marked`` is where that header's value string lies in ``data``
        (its length octets included) when it came as a literal, else None."""
        self.marked = None
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
                start = i
                value, i = self._string(data, i)
                header = (name, value)
                if name == mark:
                    self.marked = (start, i)
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


class Hole:
    """A header block remembered but for one literal value (Envoy's ``traceparent``), for a connection whose HPACK
    table has size 0 (``grpc_wire`` asks for it with tracing): then a block means the same whatever came before it,
    and Envoy's blocks differ only in that value. ``value(block)`` is the value of a block that has the remembered
    bytes around it, else None (decode the block then)."""

    __slots__ = ("found", "prefix", "rest", "suffix")

    def __init__(
        self, block: bytes, start: int, end: int, rest: int, found: tuple[str, float | None, dict[str, str]]
    ) -> None:
        self.prefix, self.suffix = block[:start], block[end:]
        self.rest = rest  # the decoded header list's size without the value (RFC 7541 4.1 sizes, as the decoder's)
        self.found = found  # what the caller made of the rest of the block

    def value(self, block: bytes, limit: int) -> bytes | None:
        p, s = len(self.prefix), len(self.suffix)
        n = len(block) - p - s  # the value string: one length octet, then the octets
        if n < 1 or not block.startswith(self.prefix) or not block.endswith(self.suffix):
            return None
        octet = block[p]
        length = octet & 0x7F
        if length == 0x7F or length != n - 1:  # a length of more octets, or another length: decode the block
            return None
        raw = block[p + 1 : p + n]
        value = (hex_huffman(raw) or decode_huffman(raw)) if octet & 0x80 else raw
        if self.rest + len(value) > limit:
            raise OversizedHeaderListError(f"A header list larger than {limit} has been received")
        return value


# Huffman codes (RFC 7541 appendix B) of the characters of a W3C traceparent: digits, a-f and "-"; all 5 or 6 bits
_HEX_CODES = {
    "00000": b"0", "00001": b"1", "00010": b"2", "011001": b"3", "011010": b"4", "011011": b"5", "011100": b"6",
    "011101": b"7", "011110": b"8", "011111": b"9", "00011": b"a", "100011": b"b", "00100": b"c", "100100": b"d",
    "00101": b"e", "100101": b"f", "010110": b"-",
}  # fmt: skip
_hex_table: list[tuple[bytes, int]] = []


def _windows() -> list[tuple[bytes, int]]:
    """Every 12-bit window -> the whole traceparent characters at its start, and how many bits they take."""
    table = []
    for w in range(4096):
        bits = format(w, "012b")
        out, used = b"", 0
        while True:
            for code, char in _HEX_CODES.items():
                if bits.startswith(code, used):
                    out, used = out + char, used + len(code)
                    break
            else:
                break
        table.append((out, used))
    return table


def hex_huffman(data: bytes) -> bytes | None:
    """A Huffman string of only digits, a-f and "-" (a traceparent) decoded two or so characters a step (~4 us
    against ``decode_huffman``'s ~9); None for anything else, which the general decoder then decodes or rejects."""
    if not _hex_table:
        _hex_table.extend(_windows())
    table = _hex_table
    total = len(data) * 8
    n = int.from_bytes(data, "big") << 12 | 0xFFF  # 12 more bits, all ones (never a whole code of the table's)
    out = []
    pos = 0
    while pos < total:
        chars, used = table[n >> (total - pos) & 0xFFF]
        if not used:
            break
        out.append(chars)
        pos += used
    left = total - pos
    if left < 0 or left > 7 or (n >> 12) & ((1 << left) - 1) != (1 << left) - 1:  # padding: up to 7 one bits
        return None
    return b"".join(out)
