"""Editing a JSON request body without re-serialising it: pass-through forwarding keeps the client's bytes."""

from __future__ import annotations

import re

import orjson

from extproc.translation.errors import invalid

_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]', re.DOTALL)


def set_model(body: bytes, model: str) -> bytes:
    """Swap only the top-level ``model`` string value, leaving every other byte alone (pass-through aliasing)."""
    depth = 0
    tokens = _JSON_TOKEN.finditer(body)
    for m in tokens:
        first = body[m.start()]
        if first == 0x22:  # a string: at depth 1, "model" followed by ":" is the key we want
            if depth == 1 and m.group() == b'"model"':
                value = next(tokens, None)
                if value is not None and body[value.start()] == 0x22 and body[m.end() : value.start()].strip() == b":":
                    return body[: value.start()] + orjson.dumps(model) + body[value.end() :]
        elif first == 0x7B or first == 0x5B:
            depth += 1
        else:
            depth -= 1
    # No plain top-level string "model" (missing, escaped, or not a string): re-serialise.
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    data["model"] = model
    return orjson.dumps(data)
