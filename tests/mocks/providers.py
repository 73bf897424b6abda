"""Strict mock provider servers (OpenAI, Anthropic, Gemini) for the end-to-end tests: ``MockProvider(kind, key)``.

Each MockProvider is a stdlib ThreadingHTTPServer (HTTP/1.1, keep-alive) on 127.0.0.1 in a daemon thread. It
validates requests about as strictly as the real API (hand-written checks that mirror the API, then the installed
official SDK's own request types), answers errors in the provider's real error envelope, and produces deterministic
answers driven by the last user text:

    default            text "Hello from mock {kind}. You said: {text}", usage input 11 / output 7
    tools declared     a call to the first declared tool with {"city": "Paris"}; "PARALLEL": + {"city": "Tokyo"}
    tool results turn  text "Tool results: r1 | r2"
    ERROR <status>     that status with the provider's error body (429 adds retry-after: 7; Anthropic 529 overloaded)
    SLEEP <seconds>    sleep before answering (a slow provider: the sleep is the behaviour under test)
    LENGTH             truncated answer, finish length / max_tokens / MAX_TOKENS
    HTML500            500 with an HTML page
    BADJSON            200 with truncated JSON (streams: one event with truncated JSON data)
    STOPSEQ            Anthropic stop_reason "stop_sequence", stop_sequence "END"
    SLOWSTREAM         0.3 s between stream events
    DROPSTREAM         the stream up to its first text event, then the connection is cut without a terminator
                       (after ``mock.hold_drop()``: the cut waits until the returned event is set)
    LONGSTREAM         events spread over 8 s in all (longer than the tests' 6 s gateway timeout)
    HTML200            200 with an HTML page instead of JSON
    HUGE               a 200 KB text answer
    STREAMERROR        2 stream events, then the provider's own in-stream error event (overloaded), clean end
    REFUSE             a refusal: finish content_filter / stop_reason refusal / finishReason SAFETY

A test can also make one mock fail whatever the request says: ``mock.set_fault(Fault(status=503))`` (or ``sleep``,
``drop``, a random ``rate``, a number of ``times``), ``mock.set_fault(None)`` to stop.

Request features drive the answer too, as they would on the real APIs:

    reasoning on       (OpenAI reasoning_effort, Anthropic thinking enabled/adaptive, Gemini includeThoughts)
                       Anthropic: a thinking block with a signature from ANTHROPIC_THINKING_SIGNATURES first, and the
                       next turn of a tool loop must replay it unchanged (else 400, like the API); Gemini: a thought
                       part first; usage reports reasoning tokens (OpenAI reasoning_tokens, Anthropic
                       output_tokens_details.thinking_tokens, Gemini thoughtsTokenCount) of REASONING_TOKENS
    JSON output        (response_format json_object/json_schema, output_config.format, responseMimeType JSON)
                       text is a JSON value built from the schema ({"answer": "mock"} without one)
    a named tool       (tool_choice function/tool, Gemini ANY with one allowedFunctionNames) is the one called
    n / candidateCount several choices / candidates ("Hello ..." + " (#i)" for i > 0)
    count_tokens       Anthropic POST /v1/messages/count_tokens -> {"input_tokens": 5}; Gemini :countTokens ->
                       {"totalTokens": 5}
"""

from __future__ import annotations

from tests.mocks.anthropic_api import ANTHROPIC_THINKING_SIGNATURES, AnthropicApi
from tests.mocks.anthropic_api import magic_error as _anthropic_error
from tests.mocks.gemini_api import GEMINI_THOUGHT_SIGNATURES, GeminiApi
from tests.mocks.gemini_api import magic_error as _gemini_error
from tests.mocks.openai_api import OpenAIApi
from tests.mocks.openai_api import magic_error as _openai_error
from tests.mocks.server import ApiError, Fault, MockServer, ProviderApi, Received

__all__ = [
    "ANTHROPIC_THINKING_SIGNATURES", "GEMINI_THOUGHT_SIGNATURES", "Fault", "MockProvider", "Received", "magic_error",
]  # fmt: skip

_APIS: dict[str, type[ProviderApi]] = {"openai": OpenAIApi, "anthropic": AnthropicApi, "gemini": GeminiApi}


class MockProvider(MockServer):
    """A strict fake of one provider API (``kind``: openai, anthropic or gemini) that accepts ``api_key``. See the
    module docstring for the magic words."""

    def __init__(self, kind: str, api_key: str) -> None:
        if kind not in _APIS:
            raise ValueError(f"unknown kind {kind!r}")
        super().__init__(_APIS[kind](), api_key)

    def start(self) -> MockProvider:
        super().start()
        return self

    def __enter__(self) -> MockProvider:
        return self.start()


def magic_error(kind: str, status: int, model: str) -> ApiError:
    """The error a provider of ``kind`` answers for the ``ERROR <status>`` magic word."""
    return {"openai": _openai_error, "anthropic": _anthropic_error, "gemini": _gemini_error}[kind](status, model)


_magic_error = magic_error  # the name tests/e2e/test_errors.py imported before the split
