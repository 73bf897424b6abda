"""Edits of a JSON object's top-level values that leave every other byte of the document alone.

Same-format requests pass through as the client's bytes: when the gateway must change one top-level value (the
model name of an alias, OpenAI's ``stream_options``), only that value's bytes change. Numbers keep their spelling
(``1.50`` stays ``1.50``), whitespace and key order stay, unknown fields survive. Duplicate top-level keys are all
rewritten, so whichever one a provider reads, it reads what the gateway checked.
"""

from __future__ import annotations

import re

import orjson

from extproc.translation.errors import invalid

# Strings, structural characters, and runs of anything else (numbers, true/false/null, stray bytes).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.DOTALL)


def _key(token: bytes) -> str | None:
    if b"\\" not in token:
        return token[1:-1].decode("utf-8", "replace")
    try:
        value = orjson.loads(token)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


def top_level_spans(body: bytes, key: str) -> list[tuple[int, int]]:
    """The byte spans of every value of ``key`` in the top-level object of ``body`` (a JSON object)."""
    spans: list[tuple[int, int]] = []
    depth = 0
    expect_key = False
    start = -1  # start of the value being measured (a wanted key's), -1 when none
    pending = False  # a wanted key was seen; its value starts at the next token after ":"
    for m in _TOKEN.finditer(body):
        tok = m.group()
        first = tok[0]
        if first == 0x7B or first == 0x5B:  # { [
            if pending:
                start, pending = m.start(), False
            depth += 1
            expect_key = first == 0x7B and depth == 1
        elif first == 0x7D or first == 0x5D:  # } ]
            depth -= 1
            if depth == 1 and start >= 0:
                spans.append((start, m.end()))
                start = -1
        elif first == 0x3A:  # :
            continue
        elif first == 0x2C:  # ,
            if depth == 1:
                expect_key = True
        elif depth == 1 and expect_key:  # a key of the top-level object
            expect_key = False
            pending = first == 0x22 and _key(tok) == key
        elif pending:  # a scalar value of a wanted key
            pending = False
            spans.append((m.start(), m.end()))
    return spans


def replace_top_level(body: bytes, key: str, value: bytes) -> bytes:
    """``body`` with every top-level ``key`` value replaced by the JSON text ``value``; the key is added first in the
    object when it is missing. Raises a 400 if ``body`` is not a JSON object."""
    absent = b"\\u" not in body and orjson.dumps(key) not in body  # then no key of that name, at any depth
    spans = [] if absent else top_level_spans(body, key)
    if not spans:
        stripped = body.lstrip()
        if not stripped.startswith(b"{"):
            raise invalid("request body must be a JSON object")
        at = len(body) - len(stripped) + 1
        rest = body[at:].lstrip()
        sep = b"" if rest.startswith(b"}") else b","
        return body[:at] + orjson.dumps(key) + b":" + value + sep + body[at:]
    out = bytearray()
    pos = 0
    for a, b in spans:
        out += body[pos:a]
        out += value
        pos = b
    out += body[pos:]
    return bytes(out)


_MODEL_VALUE = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')


def rewrite_model(body: bytes, model: str, current: str | None = None) -> bytes:
    """The client's bytes with the top-level ``model`` set to ``model``. Unchanged (the same object) when it already
    says exactly that once (``current`` is what the gateway read from the top-level object).

    The usual body names ``"model"`` once and has no ``\\u`` escape that could spell another key of that name: when
    the gateway read a top-level ``model`` (``current`` is not None), that one occurrence is it, found without
    tokenising the body. Without a top-level one, the occurrence is somewhere inside (a tool's parameter, metadata)."""
    if current is not None and b"\\u" not in body and body.count(b'"model"') == 1:
        if current == model:
            return body
        m = _MODEL_VALUE.search(body)
        if m is not None:
            return body[: m.start(1)] + orjson.dumps(model) + body[m.end(1) :]
    spans = top_level_spans(body, "model")
    if len(spans) == 1 and current == model:
        return body
    return replace_top_level(body, "model", orjson.dumps(model))
