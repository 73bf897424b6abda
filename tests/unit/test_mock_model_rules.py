# ruff: noqa: E501 (the parameter tables quote whole API messages)
"""The strict mocks refuse what the real APIs refuse per model family, with their messages (over HTTP, no Envoy)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.mocks.providers import MockProvider

KEY = "k-rules"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def mocks() -> Iterator[dict[str, MockProvider]]:
    started = {kind: MockProvider(kind, KEY).start() for kind in ("openai", "anthropic", "gemini")}
    yield started
    for m in started.values():
        m.stop()


def post(mocks: dict[str, MockProvider], kind: str, body: dict, model: str = "") -> httpx.Response:
    m = mocks[kind]
    if kind == "openai":
        return httpx.post(f"{m.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    if kind == "anthropic":
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        return httpx.post(f"{m.base_url}/v1/messages", json=body, headers=headers)
    url = f"{m.base_url}/v1beta/models/{model}:generateContent"
    return httpx.post(url, json=body, headers={"x-goog-api-key": KEY})


def refused(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    return r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model": "gpt-4o-mini", "reasoning_effort": "high"}, "Unsupported parameter: 'reasoning_effort' is not"),
        ({"model": "gpt-4o-mini", "max_completion_tokens": 32000}, "max_tokens is too large: 32000. This model supports at most 16384"),
        ({"model": "gpt-5-mini", "reasoning_effort": "xhigh"}, "Supported values are: 'minimal', 'low', 'medium', and 'high'."),
        ({"model": "o3", "temperature": 0.5}, "'temperature' does not support 0.5 with this model. Only the default (1)"),
        ({"model": "gpt-4o", "user": "u" * 65}, "Expected a string with maximum length 64, but got a string with length 65"),
    ],
)  # fmt: skip
def test_openai_families(mocks: dict[str, MockProvider], extra: dict, message: str) -> None:
    assert message in refused(post(mocks, "openai", {"messages": HI, **extra}))


def test_openai_accepts_what_each_family_takes(mocks: dict[str, MockProvider]) -> None:
    for body in (
        {"model": "gpt-4o-mini", "max_completion_tokens": 16384, "temperature": 0.3, "top_p": 0.9, "user": "u" * 64},
        {"model": "gpt-5-mini", "reasoning_effort": "minimal", "temperature": 1},
        {"model": "gpt-test", "reasoning_effort": "high", "max_completion_tokens": 10**6},  # no family: shape only
    ):
        assert post(mocks, "openai", {"messages": HI, **body}).status_code == 200, body


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model": "claude-haiku-4-5", "temperature": 0.2, "top_p": 0.9}, "`temperature` and `top_p` cannot both be specified for this model"),
        ({"model": "claude-opus-4-1-20250805", "temperature": 0.2, "top_p": 0.9}, "cannot both be specified"),
        ({"model": "claude-opus-4-8", "temperature": 0.2}, "`temperature` is deprecated for this model."),
        ({"model": "claude-sonnet-4-5", "max_tokens": 64001}, "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5"),
        ({"model": "claude-opus-4-7", "thinking": {"type": "enabled", "budget_tokens": 2048}}, '"thinking.type.enabled" is not supported for this model'),
        ({"model": "claude-3-5-haiku-20241022", "thinking": {"type": "enabled", "budget_tokens": 2048}}, "does not support extended thinking"),
    ],
)  # fmt: skip
def test_anthropic_families(mocks: dict[str, MockProvider], extra: dict, message: str) -> None:
    body = {"max_tokens": 4096, "messages": HI, **extra}
    assert message in refused(post(mocks, "anthropic", body))


def test_anthropic_accepts_what_each_family_takes(mocks: dict[str, MockProvider]) -> None:
    for body in (
        {"model": "claude-haiku-4-5", "max_tokens": 64000, "temperature": 0.2},
        {"model": "claude-3-5-haiku-20241022", "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "top_k": 5},
        {"model": "claude-opus-4-7", "max_tokens": 100, "thinking": {"type": "adaptive"}},
        {"model": "claude-test", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9},
    ):
        assert post(mocks, "anthropic", {"messages": HI, **body}).status_code == 200, body


@pytest.mark.parametrize(
    ("model", "gen", "message"),
    [
        ("gemini-2.5-flash", {"thinkingConfig": {"thinkingLevel": "HIGH"}}, "Thinking level is not supported"),
        ("gemini-2.5-pro", {"thinkingConfig": {"thinkingBudget": 0}}, "Budget 0 is invalid. This model only works in thinking mode."),
        ("gemini-2.0-flash", {"thinkingConfig": {"thinkingBudget": 1024}}, "Thinking is not supported"),
        ("gemini-3-flash-preview", {"maxOutputTokens": 100000}, "maxOutputTokens value of 100000"),
    ],
)  # fmt: skip
def test_gemini_families(mocks: dict[str, MockProvider], model: str, gen: dict, message: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": gen}
    assert message in refused(post(mocks, "gemini", body, model))


def test_gemini_accepts_what_each_generation_takes(mocks: dict[str, MockProvider]) -> None:
    for model, gen in (
        ("gemini-2.5-flash", {"thinkingConfig": {"thinkingBudget": 0}}),
        ("gemini-3-pro-preview", {"thinkingConfig": {"thinkingLevel": "LOW"}, "maxOutputTokens": 65536}),
    ):
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": gen}
        assert post(mocks, "gemini", body, model).status_code == 200, (model, gen)
