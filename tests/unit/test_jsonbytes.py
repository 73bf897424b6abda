"""Byte-level edits of a request's top-level values: only those bytes change, every top-level duplicate is caught
(escapes included), and nothing nested is ever touched."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.translation import jsonbytes
from extproc.translation.errors import GatewayError


def test_unchanged_body_is_the_same_object() -> None:
    body = b'{"model": "m", "temperature": 1.50, "tools": [{"parameters": {"properties": {"model": {}}}}]}'
    assert jsonbytes.rewrite_model(body, "m", "m") is body


def test_alias_changes_only_the_value() -> None:
    body = b'{ "temperature": 1.50,\n  "model" : "alias", "x": "a\\"b"}'
    assert jsonbytes.rewrite_model(body, "real", "alias") == body.replace(b'"alias"', b'"real"')


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "allowed", "mod\\u0065l": "other"}',  # an escaped duplicate: the fast path must not be taken
        b'{"model": "other", "model": "allowed"}',  # a plain duplicate (orjson reads the last)
        b'{"m\\u006fdel": "other", "messages": [], "model": "allowed"}',
    ],
)
def test_every_top_level_duplicate_is_rewritten(body: bytes) -> None:
    """Whichever duplicate a provider reads, it reads what the gateway checked."""
    out = jsonbytes.rewrite_model(body, "allowed", "allowed")
    assert out != body
    assert b'"other"' not in out and orjson.loads(out)["model"] == "allowed"


def test_nested_model_keys_are_never_touched() -> None:
    body = b'{"messages": [{"model": "x"}], "model": "a", "extra": {"model": "y"}}'
    assert (
        jsonbytes.rewrite_model(body, "b", "a")
        == b'{"messages": [{"model": "x"}], "model": "b", "extra": {"model": "y"}}'
    )


def test_a_lone_nested_model_key_is_not_taken_for_the_top_level_one() -> None:
    """A body without a top-level model whose only "model" is nested (a tool parameter, metadata): the nested one
    stays and the top-level one is added (found by hypothesis: the one-occurrence shortcut once rewrote it)."""
    for body in (b'{"messages":{"model":""}}', b'{"tools":[{"parameters":{"properties":{"model":{}}}}]}'):
        out = orjson.loads(jsonbytes.rewrite_model(body, "m"))
        assert out == {**orjson.loads(body), "model": "m"}


def test_stream_options_inserted_or_replaced() -> None:
    body = b'{"model": "m", "stream": true}'
    value = b'{"include_usage":true}'
    assert jsonbytes.replace_top_level(body, "stream_options", value) == b'{"stream_options":' + value + b"," + body[1:]
    nested = b'{"model": "m", "x": {"stream_options": 1}}'
    assert jsonbytes.replace_top_level(nested, "stream_options", value).startswith(b'{"stream_options":' + value)
    with pytest.raises(GatewayError):
        jsonbytes.replace_top_level(b"[1]", "stream_options", value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["model", "a", "mod\u00e9l"]), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(["model", "messages", "x", "stream"]), _json, max_size=4), st.text(max_size=8))
def test_rewrite_sets_exactly_the_top_level_model(obj: dict[str, object], model: str) -> None:
    body = orjson.dumps(obj)
    out = jsonbytes.rewrite_model(body, model, obj.get("model") if isinstance(obj.get("model"), str) else None)
    assert orjson.loads(out) == {**obj, "model": model}
