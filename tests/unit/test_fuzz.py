"""Fuzzing every wire format with hypothesis, with one strictness for each side of the gateway.

Client side (what a client sends): any bytes or JSON-ish value given to ``parse_request`` ends in a canonical
``Request`` or a ``GatewayError`` with status exactly 400 (the README: bad input gets a clear 4xx, never a 5xx or a
traceback). Whatever parses must also plan its media and build for every provider, or be refused with a 400.

Provider side (what a provider answers): any body given to ``parse_response`` or a ``StreamDecoder`` ends in a result
or a ``GatewayError`` with status exactly 502 (the README: a provider answer that is not valid JSON of its format is a
502); ``parse_error`` never raises; whatever parses builds for every client format.

How many examples each property gets comes from the hypothesis profile (tests/conftest.py): ``ci`` by default, few
and quick; ``--hypothesis-profile=long`` for deep runs. The ``@example`` rows are a corpus of inputs that once
mattered and run in every profile.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st

from extproc.translation import canonical as c
from extproc.translation import media
from extproc.translation.errors import GatewayError
from extproc.translation.formats import registry
from extproc.translation.formats.contract import BuildOptions, StreamOptions

FORMATS = registry.FORMATS

# ---------------------------------------------------------------------------------------------------------------------
# Field names and values each format's parser branches on, so the generated inputs reach past the first check.
# ---------------------------------------------------------------------------------------------------------------------
FIELDS = {
    "openai": [
        "model", "messages", "role", "content", "name", "type", "text", "image_url", "url", "detail", "file",
        "file_data", "file_id", "filename", "input_audio", "refusal", "tools", "tool_calls", "function", "arguments",
        "parameters", "strict", "description", "tool_call_id", "tool_choice", "function_call", "functions",
        "max_tokens", "max_completion_tokens", "stream", "stream_options", "include_usage", "temperature", "top_p",
        "stop", "n", "seed", "presence_penalty", "frequency_penalty", "response_format", "json_schema", "schema",
        "reasoning_effort", "parallel_tool_calls", "user", "metadata", "logprobs", "id",
    ],
    "anthropic": [
        "model", "max_tokens", "messages", "role", "content", "system", "type", "text", "source", "media_type",
        "data", "url", "image", "document", "title", "tool_use", "tool_result", "id", "name", "input",
        "tool_use_id", "is_error", "thinking", "redacted_thinking", "signature", "budget_tokens", "tools",
        "input_schema", "description", "tool_choice", "disable_parallel_tool_use", "temperature", "top_p", "top_k",
        "stop_sequences", "stream", "metadata", "user_id", "output_config", "effort", "format", "schema",
        "cache_control",
    ],
    "gemini": [
        "contents", "parts", "role", "text", "thought", "thoughtSignature", "inlineData", "mimeType", "data",
        "fileData", "fileUri", "functionCall", "functionResponse", "name", "args", "id", "response", "tools",
        "functionDeclarations", "parameters", "parametersJsonSchema", "type", "properties", "items", "required",
        "anyOf", "nullable", "enum", "generationConfig", "temperature", "topP", "topK", "maxOutputTokens",
        "stopSequences", "candidateCount", "seed", "responseMimeType", "responseSchema", "responseJsonSchema",
        "thinkingConfig", "includeThoughts", "thinkingBudget", "thinkingLevel", "systemInstruction", "toolConfig",
        "functionCallingConfig", "mode", "allowedFunctionNames", "safetySettings", "model",
    ],
    "responses": [
        "model", "input", "instructions", "type", "role", "content", "text", "image_url", "file_data", "file_url",
        "filename", "file_id", "detail", "call_id", "name", "namespace", "arguments", "output", "id", "summary",
        "encrypted_content", "tools", "parameters", "strict", "description", "tool_choice", "mode",
        "max_output_tokens", "temperature", "top_p", "reasoning", "effort", "text", "format", "schema", "verbosity",
        "include", "store", "stream", "metadata", "previous_response_id", "parallel_tool_calls", "user",
    ],
}  # fmt: skip
WORDS = [
    "user", "assistant", "system", "developer", "tool", "model", "function", "text", "image", "image_url",
    "tool_use", "tool_result", "thinking", "redacted_thinking", "document", "file", "base64", "url", "enabled",
    "adaptive", "auto", "any", "none", "required", "json_object", "json_schema", "OBJECT", "STRING", "ANY", "NONE",
    "image/png", "application/pdf", "text/plain", "", "{}", '{"a":1}', "{", "data:image/png;base64,AAAA",
    "data:text/plain;base64,aGk=", "https://x/y.png", "QUFB", "%%%", "\x00", "\ud7ff",
]  # fmt: skip
ALL_FIELDS = sorted({f for fields in FIELDS.values() for f in fields})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)


def _json(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)),
        max_leaves=40,
    )


any_json = _json(st.one_of(st.sampled_from(ALL_FIELDS), st.text(max_size=8)))
shaped_json = {name: _json(st.sampled_from(fields)) for name, fields in FIELDS.items()}

# ---------------------------------------------------------------------------------------------------------------------
# Valid requests with most features of each format; the mutation property replaces any one node with anything.
# ---------------------------------------------------------------------------------------------------------------------
SEEDS: dict[str, dict[str, Any]] = {
    "openai": {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {
                "role": "user",
                "name": "bob",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUFB", "detail": "low"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a"}},
                ],
            },
            {
                "role": "assistant",
                "content": "calling",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "r"}]},
            {"role": "user", "content": "and?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["x"],
        "n": 1,
        "seed": 3,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u",
    },
    "anthropic": {
        "model": "m",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUFB"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "temperature": 1,
        "top_k": 5,
        "stop_sequences": ["x"],
        "metadata": {"user_id": "u"},
        "output_config": {"effort": "low"},
        "stream": True,
    },
    "gemini": {  # the same request as test_gemini_format.RICH_REQUEST
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "QQ=="}}]},
            {
                "role": "model",
                "parts": [{"text": "t", "thought": True}, {"functionCall": {"name": "f", "args": {"a": 1}, "id": "x"}}],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "f",
                            "id": "x",
                            "response": {"output": 1},
                            "parts": [{"inlineData": {"mimeType": "image/png", "data": "QQ=="}}],
                        }
                    },
                    {"fileData": {"mimeType": "application/pdf", "fileUri": "u"}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "s"}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "f",
                        "parameters": {"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {}}}},
                    },
                    {"name": "g", "parametersJsonSchema": {"type": "object"}},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        "generationConfig": {
            "temperature": 1,
            "stopSequences": ["x"],
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "anyOf": [{"type": "STRING"}], "nullable": True},
            "thinkingConfig": {"thinkingBudget": 5, "thinkingLevel": "LOW"},
        },
    },
    "responses": {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "and kind"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,QUFB", "detail": "low"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "calling", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call", "call_id": "c2", "name": "sub", "namespace": "ns", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "r"}]},
            {"type": "function_call_output", "call_id": "c2", "output": "done"},
            {"role": "user", "content": "and?"},
        ],
        "tools": [
            {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "sub", "parameters": {}}]},
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "max_output_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
        "stream": True,
        "safety_identifier": "u",
    },
}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _mutated(fmt: str, path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    obj = copy.deepcopy(SEEDS[fmt])
    target = obj
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def mutations(fmt: str) -> st.SearchStrategy[bytes]:
    return st.builds(
        _mutated, st.just(fmt), st.sampled_from(_paths(SEEDS[fmt])[1:]), shaped_json[fmt], st.booleans()
    ).map(orjson.dumps)


# Message lists of the right outline with anything inside (from the former per-format fuzzers).
_oa_messages = st.lists(
    st.dictionaries(
        st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name", "function_call", "refusal"]),
        st.one_of(shaped_json["openai"], st.sampled_from(["user", "assistant", "tool", "system", "developer", "x"])),
        max_size=5,
    ),
    max_size=4,
)
_an_block = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
                              "search_result", "x"])},
    optional={k: shaped_json["anthropic"] for k in ("text", "source", "id", "name", "input", "tool_use_id", "content",
                                                    "is_error", "thinking", "signature", "data", "title")},
)  # fmt: skip
_an_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "x"]),
            "content": st.one_of(shaped_json["anthropic"], st.lists(_an_block, max_size=3)),
        }
    ),
    max_size=3,
)
_AN_TOOL_USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
_outlined = {
    "openai": st.builds(lambda top, msgs: {"model": "m", "messages": msgs, **top},
                        st.dictionaries(st.sampled_from(FIELDS["openai"]), shaped_json["openai"], max_size=5),
                        _oa_messages),
    "anthropic": st.builds(lambda lead, msgs: {"model": "m", "max_tokens": 5, "messages": [*lead, *msgs]},
                           st.sampled_from([[], [_AN_TOOL_USE]]), _an_messages),
    "responses": st.builds(lambda top, items: {"model": "m", "input": items, **top},
                           st.dictionaries(st.sampled_from(FIELDS["responses"]), shaped_json["responses"], max_size=5),
                           st.lists(st.dictionaries(st.sampled_from(["type", "role", "content", "call_id", "name",
                                                                     "arguments", "output", "summary",
                                                                     "encrypted_content", "id"]),
                                                    shaped_json["responses"], max_size=5), max_size=4)),
    "gemini": st.builds(lambda contents: {"contents": contents},
                        st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "model", "", "x"]),
                                                        "parts": st.lists(shaped_json["gemini"], max_size=3)}),
                                 max_size=3)),
}  # fmt: skip


def client_bodies(fmt: str) -> st.SearchStrategy[bytes]:
    """Bytes a client might send: anything, JSON of any shape, JSON shaped like the format, the format's outline with
    anything inside, one-node mutations of a valid request."""
    return st.one_of(
        st.binary(max_size=64),
        any_json.map(orjson.dumps),
        st.dictionaries(st.sampled_from(FIELDS[fmt]), shaped_json[fmt], max_size=8).map(orjson.dumps),
        _outlined[fmt].map(orjson.dumps),
        mutations(fmt),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Client side: a Request or a 400
# ---------------------------------------------------------------------------------------------------------------------
def _must_be_400(err: GatewayError, where: str) -> None:
    assert err.status == 400, f"{where} answered {err.status} ({err.type}: {err.message}); bad input must get a 400"
    assert err.type == "invalid_request", f"{where}: {err!r}"


def _parse_client(fmt: str, body: bytes, stream: bool) -> c.Request | None:
    """parse_request as the exchange calls it: Gemini with the model and stream flag from the URL; the others with
    the JSON object already decoded (and again from bytes, which the format API also takes)."""
    mod = FORMATS[fmt]
    sources: list[bytes | dict[str, Any]] = [body]
    if fmt != "gemini":
        try:
            head = orjson.loads(body)
        except orjson.JSONDecodeError:
            head = None
        if isinstance(head, dict):
            sources.append(head)
    results: list[c.Request | None] = []
    for source in sources:
        try:
            req = mod.parse_request(source, model="m", stream=stream)
        except GatewayError as err:
            _must_be_400(err, f"{fmt}.parse_request")
            results.append(None)
        else:
            assert isinstance(req, c.Request), type(req)
            results.append(req)
    assert len({r is None for r in results}) == 1, "bytes and the decoded object must get the same verdict"
    return results[-1]


def _build_everywhere(req: c.Request) -> None:
    for name, mod in FORMATS.items():
        try:
            media.plan(req, mod, media.FetchPolicy())
            out = mod.build_request(req, model="x", options=BuildOptions(default_max_tokens=100))
        except GatewayError as err:
            _must_be_400(err, f"media.plan/{name}.build_request")
        else:
            assert isinstance(orjson.loads(out), dict)


def _client_property(fmt: str, body: bytes, stream: bool) -> None:
    note(f"body={body!r}")
    req = _parse_client(fmt, body, stream)
    if req is not None:
        _build_everywhere(req)


@given(body=client_bodies("openai"), stream=st.booleans())
@example(body=b'{"model": "m", "messages": [{"role": "tool", "content": null}]}', stream=False)
@example(body=b'{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":"{"}}]}]}',
         stream=False)  # fmt: skip
@example(body=b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}',
         stream=False)  # fmt: skip
@example(body=b"", stream=False)
@example(body=b"\xff\xfe", stream=False)
@example(body=b"[]", stream=False)
def test_openai_client_request_is_a_request_or_a_400(body: bytes, stream: bool) -> None:
    _client_property("openai", body, stream)


@given(body=client_bodies("anthropic"), stream=st.booleans())
@example(body=b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}',
         stream=False)  # fmt: skip
@example(body=b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result",'
         b'"tool_use_id":"t1","content":"x"}]},{"role":"assistant","content":[{"type":"tool_use","id":"t1",'
         b'"name":"f","input":{}}]}]}', stream=False)  # fmt: skip
@example(body=b"null", stream=True)
def test_anthropic_client_request_is_a_request_or_a_400(body: bytes, stream: bool) -> None:
    _client_property("anthropic", body, stream)


@given(body=client_bodies("gemini"), stream=st.booleans())
@example(body=b'{"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": []}}]}]}',
         stream=False)  # fmt: skip
@example(body=b'{"contents": [{"parts": [{"inlineData": {"data": null}}]}]}', stream=False)
@example(body=b'{"contents": [}', stream=True)
def test_gemini_client_request_is_a_request_or_a_400(body: bytes, stream: bool) -> None:
    _client_property("gemini", body, stream)


@given(body=client_bodies("responses"), stream=st.booleans())
@example(body=b'{"model": "m", "input": [{"type": "function_call_output", "call_id": null}]}', stream=False)
@example(body=b'{"model": "m", "input": [{"type": "reasoning", "encrypted_content": "YWlndy1yMS57fQ"}]}',
         stream=False)  # fmt: skip
@example(body=b'{"model": "m", "input": [{"type": "item_reference", "id": "x"}]}', stream=False)
def test_responses_client_request_is_a_request_or_a_400(body: bytes, stream: bool) -> None:
    _client_property("responses", body, stream)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_seeds_are_valid_requests(fmt: str) -> None:
    """The mutation strategy starts from requests that parse and build, so a mutation is one fault away."""
    req = _parse_client(fmt, orjson.dumps(SEEDS[fmt]), stream=True)
    assert req is not None and len(req.messages) >= 3 and req.tools


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: a result or a 502
# ---------------------------------------------------------------------------------------------------------------------
def _must_be_502(err: GatewayError, where: str) -> None:
    assert err.status == 502, f"{where} answered {err.status} ({err.type}: {err.message}); a bad upstream is a 502"


EVENT_TYPES = (c.MessageStart, c.TextDelta, c.ThinkingDelta, c.ToolCallStart, c.ToolCallDelta, c.Finish, c.UsageUpdate,
               c.StreamError)  # fmt: skip


def _provider_property(fmt: str, body: bytes, status: int) -> None:
    note(f"body={body!r}")
    mod = FORMATS[fmt]
    try:
        resp = mod.parse_response(body)
    except GatewayError as err:
        _must_be_502(err, f"{fmt}.parse_response")
    else:
        assert isinstance(resp, c.Response)
        for name, client in FORMATS.items():
            try:
                out = client.build_response(resp, model="m")
            except GatewayError as err:  # e.g. tool arguments that are not JSON: the provider's fault
                _must_be_502(err, f"{name}.build_response")
            else:
                orjson.loads(out)
    err = mod.parse_error(status, body)  # the error path: must never raise
    assert isinstance(err, GatewayError) and err.status == status  # upstream errors keep their status
    for client in FORMATS.values():
        orjson.loads(client.build_error(err, request_id="r"))
    dec = mod.stream_decoder(StreamOptions())
    events: list[Any] = []
    try:
        events += dec.feed(body)
        events += dec.close()
    except GatewayError as e:
        _must_be_502(e, f"{fmt}.StreamDecoder")
    for name, client in FORMATS.items():
        enc = client.stream_encoder(StreamOptions(model="m", include_usage=True))
        for ev in events:
            assert isinstance(ev, EVENT_TYPES), ev
            try:
                enc.error(ev.error) if isinstance(ev, c.StreamError) else enc.encode(ev)
            except GatewayError as e:
                _must_be_502(e, f"{name}.StreamEncoder")


def provider_bodies(fmt: str) -> st.SearchStrategy[bytes]:
    sse = st.lists(any_json.map(orjson.dumps), max_size=4).map(lambda xs: b"".join(b"data: " + x + b"\n\n" for x in xs))
    return st.one_of(st.binary(max_size=300), any_json.map(orjson.dumps), shaped_json[fmt].map(orjson.dumps), sse)


@pytest.mark.parametrize("fmt", list(FORMATS))
@given(data=st.data(), status=st.integers(400, 599))
@example(data=None, status=500)
def test_provider_answer_is_a_result_or_a_502(fmt: str, data: st.DataObject | None, status: int) -> None:
    corpus = [b"<html>500</html>", b'{"error": null}', b"\xff\xfe", b"data: {\n\n", b"data: [DONE]\n\n"]
    if data is None:
        for body in corpus:
            _provider_property(fmt, body, status)
        return
    _provider_property(fmt, data.draw(provider_bodies(fmt), label="body"), status)
