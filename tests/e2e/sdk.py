"""The three official SDKs pointed at the gateway, behind one small interface so each test runs for all 9 pairs.

Each function drives the real SDK the way its users do and returns plain values (text, finish reason in the client's
own vocabulary, usage, tool calls) for the tests to assert on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
from google import genai
from google.genai import types as gtypes

CLIENT_KEY = "client-credential-must-not-leak"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}
# Each client's own word for "stopped normally", "hit max tokens" and "wants tools".
FINISH = {
    "openai": {"stop": "stop", "length": "length", "tool_calls": "tool_calls"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"},
}


@dataclass
class Answer:
    text: str
    finish: str
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, args)
    raw: Any = None


def openai_client(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30, **kw)


def anthropic_client(url: str, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=CLIENT_KEY, max_retries=0, timeout=30, **kw)


def gemini_client(url: str, api_version: str = "v1beta") -> genai.Client:
    opts = gtypes.HttpOptions(base_url=f"{url}/gemini", api_version=api_version, timeout=30_000)
    return genai.Client(api_key=CLIENT_KEY, http_options=opts)


# ------------------------------------------------------------------------------------------------------------- text
def ask(client: str, url: str, model: str, text: str, *, system: str | None = None, **sampling: Any) -> Answer:
    """One user turn with optional system prompt and sampling (temperature, top_p, max_tokens, stop)."""
    return {"openai": _ask_openai, "anthropic": _ask_anthropic, "gemini": _ask_gemini}[client](
        url, model, text, system, sampling
    )


def _ask_openai(url: str, model: str, text: str, system: str | None, s: dict[str, Any]) -> Answer:
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    kw: dict[str, Any] = {}
    if "max_tokens" in s:
        kw["max_completion_tokens"] = s["max_tokens"]
    for k in ("temperature", "top_p", "stop"):
        if k in s:
            kw[k] = s[k]
    r = openai_client(url).chat.completions.create(model=model, messages=messages, **kw)  # type: ignore[arg-type]
    choice = r.choices[0]
    return Answer(
        choice.message.content or "",
        choice.finish_reason,
        r.usage.prompt_tokens if r.usage else None,
        r.usage.completion_tokens if r.usage else None,
        raw=r,
    )


def _ask_anthropic(url: str, model: str, text: str, system: str | None, s: dict[str, Any]) -> Answer:
    kw: dict[str, Any] = {}
    if system:
        kw["system"] = system
    if "stop" in s:
        kw["stop_sequences"] = s["stop"]
    # Today's SDK has no temperature/top_p parameters; the API still takes them, so send them as SDK users do.
    extra = {k: s[k] for k in ("temperature", "top_p") if k in s}
    if extra:
        kw["extra_body"] = extra
    r = anthropic_client(url).messages.create(
        model=model, max_tokens=s.get("max_tokens", 1024), messages=[{"role": "user", "content": text}], **kw
    )
    texts = "".join(b.text for b in r.content if b.type == "text")
    return Answer(texts, r.stop_reason or "", r.usage.input_tokens, r.usage.output_tokens, raw=r)


def _ask_gemini(url: str, model: str, text: str, system: str | None, s: dict[str, Any]) -> Answer:
    cfg = gtypes.GenerateContentConfig(
        system_instruction=system,
        temperature=s.get("temperature"),
        top_p=s.get("top_p"),
        max_output_tokens=s.get("max_tokens"),
        stop_sequences=s.get("stop"),
    )
    cl = gemini_client(url)  # keep a reference: the client closes its connection pool when collected
    r = cl.models.generate_content(model=model, contents=text, config=cfg)
    cand = r.candidates[0] if r.candidates else None
    finish = cand.finish_reason.value if cand and cand.finish_reason else ""
    um = r.usage_metadata
    out = None
    if um is not None:
        out = (um.candidates_token_count or 0) + (um.thoughts_token_count or 0)
    return Answer(r.text or "", finish, um.prompt_token_count if um else None, out, raw=r)


# ------------------------------------------------------------------------------------------------------------- tools
def tool_round_trip(client: str, url: str, model: str, *, parallel: bool = False) -> tuple[Answer, Answer]:
    """Ask with a tool; answer every call with a result naming its city; return (tool-call answer, final answer)."""
    return {"openai": _tools_openai, "anthropic": _tools_anthropic, "gemini": _tools_gemini}[client](
        url, model, parallel
    )


def _prompt(parallel: bool) -> str:
    return "What is the weather? PARALLEL" if parallel else "What is the weather in Paris?"


def _result_for(args: dict[str, Any]) -> str:
    return f"sunny in {args.get('city')}"


def _tools_openai(url: str, model: str, parallel: bool) -> tuple[Answer, Answer]:
    cl = openai_client(url)
    tools = [{"type": "function", "function": WEATHER_TOOL}]
    messages: list[Any] = [{"role": "user", "content": _prompt(parallel)}]
    r1 = cl.chat.completions.create(model=model, messages=messages, tools=tools)  # type: ignore[arg-type]
    msg = r1.choices[0].message
    calls = [(tc.function.name, _loads(tc.function.arguments)) for tc in (msg.tool_calls or [])]
    first = Answer(msg.content or "", r1.choices[0].finish_reason, None, None, calls, raw=r1)
    messages.append(
        {
            "role": "assistant",
            "content": msg.content,
            "tool_calls": [tc.model_dump(exclude_none=True) for tc in msg.tool_calls or []],
        }
    )
    for tc in msg.tool_calls or []:
        messages.append({"role": "tool", "tool_call_id": tc.id, "content": _result_for(_loads(tc.function.arguments))})
    r2 = cl.chat.completions.create(model=model, messages=messages, tools=tools)  # type: ignore[arg-type]
    second = Answer(r2.choices[0].message.content or "", r2.choices[0].finish_reason, None, None, raw=r2)
    return first, second


def _tools_anthropic(url: str, model: str, parallel: bool) -> tuple[Answer, Answer]:
    cl = anthropic_client(url)
    tools = [{"name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"],
              "input_schema": WEATHER_TOOL["parameters"]}]  # fmt: skip
    messages: list[Any] = [{"role": "user", "content": _prompt(parallel)}]
    r1 = cl.messages.create(model=model, max_tokens=512, messages=messages, tools=tools)  # type: ignore[arg-type]
    uses = [b for b in r1.content if b.type == "tool_use"]
    calls = [(b.name, dict(b.input)) for b in uses]  # type: ignore[arg-type]
    first = Answer("", r1.stop_reason or "", None, None, calls, raw=r1)
    messages.append({"role": "assistant", "content": r1.content})
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": b.id, "content": _result_for(dict(b.input))}  # type: ignore[arg-type]
                for b in uses
            ],
        }
    )
    r2 = cl.messages.create(model=model, max_tokens=512, messages=messages, tools=tools)  # type: ignore[arg-type]
    text = "".join(b.text for b in r2.content if b.type == "text")
    return first, Answer(text, r2.stop_reason or "", None, None, raw=r2)


def _tools_gemini(url: str, model: str, parallel: bool) -> tuple[Answer, Answer]:
    cl = gemini_client(url)
    tool = gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(**WEATHER_TOOL)])
    cfg = gtypes.GenerateContentConfig(
        tools=[tool], automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True)
    )
    contents: list[Any] = [gtypes.Content(role="user", parts=[gtypes.Part(text=_prompt(parallel))])]
    r1 = cl.models.generate_content(model=model, contents=contents, config=cfg)
    fcs = r1.function_calls or []
    calls = [(fc.name or "", dict(fc.args or {})) for fc in fcs]
    cand = r1.candidates[0]
    first = Answer("", cand.finish_reason.value if cand.finish_reason else "", None, None, calls, raw=r1)
    contents.append(cand.content)
    contents.append(
        gtypes.Content(
            role="user",
            parts=[
                gtypes.Part.from_function_response(name=fc.name or "", response={"result": _result_for(fc.args or {})})
                for fc in fcs
            ],
        )
    )
    r2 = cl.models.generate_content(model=model, contents=contents, config=cfg)
    c2 = r2.candidates[0]
    return first, Answer(r2.text or "", c2.finish_reason.value if c2.finish_reason else "", None, None, raw=r2)


def _loads(text: str) -> dict[str, Any]:
    import json

    return json.loads(text)


# ------------------------------------------------------------------------------------------------------------- streams
@dataclass
class Streamed:
    text: str
    finish: str
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    first_event_at: float | None = None  # time.monotonic() when the first content arrived
    events: int = 0


def stream(client: str, url: str, model: str, text: str, *, tools: bool = False, include_usage: bool = True,
           gemini_sse: bool = True) -> Streamed:  # fmt: skip
    """One streamed turn through each SDK's streaming API, collected."""
    if client == "openai":
        return _stream_openai(url, model, text, tools, include_usage)
    if client == "anthropic":
        return _stream_anthropic(url, model, text, tools)
    return _stream_gemini(url, model, text, tools, gemini_sse)


def _stream_openai(url: str, model: str, text: str, tools: bool, include_usage: bool) -> Streamed:
    import json
    import time

    kw: dict[str, Any] = {}
    if tools:
        kw["tools"] = [{"type": "function", "function": WEATHER_TOOL}]
    if include_usage:
        kw["stream_options"] = {"include_usage": True}
    cl = openai_client(url)
    out = Streamed("", "", None, None)
    calls: dict[int, list[str]] = {}
    with cl.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], stream=True, **kw) as s:
        for chunk in s:
            out.events += 1
            if chunk.usage is not None:
                out.input_tokens = chunk.usage.prompt_tokens
                out.output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                d = choice.delta
                if (d.content or d.tool_calls) and out.first_event_at is None:
                    out.first_event_at = time.monotonic()
                out.text += d.content or ""
                for tc in d.tool_calls or []:
                    assert tc.index is not None
                    if tc.index not in calls:
                        assert tc.id and tc.function and tc.function.name, "first delta of a call has id and name"
                        calls[tc.index] = [tc.function.name, ""]
                    if tc.function and tc.function.arguments:
                        calls[tc.index][1] += tc.function.arguments
                if choice.finish_reason:
                    out.finish = choice.finish_reason
    out.tool_calls = [(name, json.loads(args)) for _, (name, args) in sorted(calls.items())]
    return out


def _stream_anthropic(url: str, model: str, text: str, tools: bool) -> Streamed:
    import time

    kw: dict[str, Any] = {}
    if tools:
        kw["tools"] = [{"name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"],
                        "input_schema": WEATHER_TOOL["parameters"]}]  # fmt: skip
    cl = anthropic_client(url)
    out = Streamed("", "", None, None)
    with cl.messages.stream(model=model, max_tokens=256, messages=[{"role": "user", "content": text}], **kw) as s:
        for event in s:
            out.events += 1
            if event.type == "content_block_start" and out.first_event_at is None:
                out.first_event_at = time.monotonic()
        final = s.get_final_message()
    out.text = "".join(b.text for b in final.content if b.type == "text")
    out.tool_calls = [(b.name, dict(b.input)) for b in final.content if b.type == "tool_use"]  # type: ignore[arg-type]
    out.finish = final.stop_reason or ""
    out.input_tokens = final.usage.input_tokens
    out.output_tokens = final.usage.output_tokens
    return out


def _stream_gemini(url: str, model: str, text: str, tools: bool, sse: bool) -> Streamed:
    import time

    cfg = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(**WEATHER_TOOL)])] if tools else None,
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    cl = gemini_client(url)
    out = Streamed("", "", None, None)
    for chunk in cl.models.generate_content_stream(model=model, contents=text, config=cfg):
        out.events += 1
        if out.first_event_at is None:
            out.first_event_at = time.monotonic()
        cand = chunk.candidates[0] if chunk.candidates else None
        if cand and cand.content and cand.content.parts:
            for part in cand.content.parts:
                if part.text and not part.thought:
                    out.text += part.text
                if part.function_call:
                    out.tool_calls.append((part.function_call.name or "", dict(part.function_call.args or {})))
        if cand and cand.finish_reason:
            out.finish = cand.finish_reason.value
        um = chunk.usage_metadata
        if um is not None and um.prompt_token_count is not None:
            out.input_tokens = um.prompt_token_count
            out.output_tokens = (um.candidates_token_count or 0) + (um.thoughts_token_count or 0)
    return out
