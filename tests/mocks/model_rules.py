"""What the real APIs refuse per model family, with their error messages: the strict mocks check these after the
request's shape. Written from the providers' documentation and the errors users report, independently of the gateway's
own catalog (``extproc/core/models.yaml``), so a wrong catalog entry fails the end-to-end tests instead of agreeing
with itself. Model names no family here matches (the tests' ``gpt-test``, ``claude-test``, ``gemini-test``) are only
checked for shape, as before.

Messages marked "reported" are the APIs' words as users quote them in bug reports (OpenAI's unsupported parameter and
value, Anthropic's sampling refusals, ...); those marked "paraphrased" could not be confirmed word for word and keep
the API's envelope and the meaning.
"""

from __future__ import annotations

import re
from typing import Any

from tests.mocks.server import ApiError

_EFFORT_WORDS = {2: "{} and {}", 3: "{}, {}, and {}", 4: "{}, {}, {}, and {}", 5: "{}, {}, {}, {}, and {}"}


def _family(model: str, families: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    for pattern, rules in families:
        if re.match(pattern, model):
            return rules
    return None


# --------------------------------------------------------------------------------------------------------- OpenAI
_OA_EFFORTS_GPT5 = ("minimal", "low", "medium", "high")
_OA_EFFORTS_O = ("low", "medium", "high")
OPENAI: list[tuple[str, dict[str, Any]]] = [
    (r"gpt-4o-mini", {"max": 16384, "efforts": None}),
    (r"gpt-4o", {"max": 16384, "efforts": None}),
    (r"gpt-4\.1", {"max": 32768, "efforts": None}),
    (r"gpt-5\.[1-9]", {"max": 128000, "efforts": ("none", "low", "medium", "high")}),
    (r"gpt-5", {"max": 128000, "efforts": _OA_EFFORTS_GPT5}),
    (r"o[0-9]", {"max": 100000, "efforts": _OA_EFFORTS_O}),
]


def _oa_error(message: str, param: str, code: str) -> ApiError:
    return ApiError(400, message, etype="invalid_request_error", param=param, code=code)


def check_openai(body: dict[str, Any]) -> None:
    """Chat Completions: reasoning knob, output limit, sampling of reasoning models, the user id's length."""
    user = body.get("user")
    if isinstance(user, str) and len(user) > 64:  # reported
        raise _oa_error(
            f"Invalid 'user': string too long. Expected a string with maximum length 64, but got a string with length "
            f"{len(user)} instead.",
            "user",
            "string_above_max_length",
        )
    rules = _family(str(body.get("model", "")), OPENAI)
    if rules is None:
        return
    efforts = rules["efforts"]
    effort = body.get("reasoning_effort")
    if effort is not None and efforts is None:  # reported
        raise _oa_error(
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "reasoning_effort",
            "unsupported_parameter",
        )
    if effort is not None and effort not in efforts:  # reported
        allowed = _EFFORT_WORDS[len(efforts)].format(*(f"'{e}'" for e in efforts))
        raise _oa_error(
            f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. Supported values "
            f"are: {allowed}.",
            "reasoning_effort",
            "unsupported_value",
        )
    limit = rules["max"]
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(asked, int) and asked > limit:  # reported
        raise _oa_error(
            f"max_tokens is too large: {asked}. This model supports at most {limit} completion tokens, whereas you "
            f"provided {asked}.",
            "max_tokens",
            "invalid_value",
        )
    if efforts is not None:  # reasoning models: sampling only at its default
        for key in ("temperature", "top_p"):
            value = body.get(key)
            if value is not None and value != 1:  # reported
                raise _oa_error(
                    f"Unsupported value: '{key}' does not support {value} with this model. Only the default (1) value "
                    "is supported.",
                    key,
                    "unsupported_value",
                )


# --------------------------------------------------------------------------------------------------------- Anthropic
_NEWEST = {"max": 128000, "sampling": "none", "thinking": ("adaptive",)}  # Opus 4.7 and later
# sampling: "all" (any), "xor" (temperature and top_p not together), "none" (none of them). thinking: the types taken.
ANTHROPIC: list[tuple[str, dict[str, Any]]] = [
    (r"claude-3-haiku", {"max": 4096, "sampling": "all", "thinking": ()}),
    (r"claude-3-5-haiku", {"max": 8192, "sampling": "all", "thinking": ()}),
    (r"claude-3-7-sonnet", {"max": 64000, "sampling": "all", "thinking": ("enabled",)}),
    (r"claude-(sonnet-4-0|sonnet-4-2025|4-sonnet)", {"max": 64000, "sampling": "all", "thinking": ("enabled",)}),
    (r"claude-(opus-4-0|opus-4-2025|4-opus)", {"max": 32000, "sampling": "all", "thinking": ("enabled",)}),
    (r"claude-opus-4-1", {"max": 32000, "sampling": "xor", "thinking": ("enabled",)}),
    (r"claude-(sonnet|haiku|opus)-4-5", {"max": 64000, "sampling": "xor", "thinking": ("enabled",)}),
    (r"claude-(sonnet|opus)-4-6", {"max": 128000, "sampling": "xor", "thinking": ("enabled", "adaptive")}),
    (r"claude-(opus-4-[7-9]|opus-5|sonnet-5|haiku-5|fable|mythos)", _NEWEST),
]


def _an_error(message: str) -> ApiError:
    return ApiError(400, message, etype="invalid_request_error")


def check_anthropic(body: dict[str, Any]) -> None:
    """Messages: output limit, sampling rules, thinking types per family."""
    model = str(body.get("model", ""))
    rules = _family(model, ANTHROPIC)
    if rules is None:
        return
    asked = body.get("max_tokens")
    if isinstance(asked, int) and asked > rules["max"]:  # reported
        raise _an_error(
            f"max_tokens: {asked} > {rules['max']}, which is the maximum allowed number of output tokens for {model}"
        )
    sampling = rules["sampling"]
    if sampling == "none":
        for key in ("temperature", "top_p", "top_k"):
            if key in body:  # reported
                raise _an_error(f"`{key}` is deprecated for this model.")
    if sampling == "xor" and "temperature" in body and "top_p" in body:  # reported
        raise _an_error("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind in ("enabled", "adaptive") and not rules["thinking"]:  # paraphrased
        raise _an_error(f"thinking: '{model}' does not support extended thinking.")
    if kind == "enabled" and "enabled" not in rules["thinking"]:  # reported
        raise _an_error(
            '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
            '"output_config.effort" to control thinking behavior.'
        )
    if kind == "adaptive" and "adaptive" not in rules["thinking"]:  # paraphrased
        raise _an_error(f"thinking.type: 'adaptive' is not supported for {model}; use 'enabled' with budget_tokens.")
    if kind == "disabled" and "enabled" not in rules["thinking"] and rules["thinking"]:  # reported (Opus 4.7)
        raise _an_error('"thinking.type.disabled" is not supported for this model.')


# --------------------------------------------------------------------------------------------------------- Gemini
# thinking: "none" (no thinkingConfig knob), "budget" (thinkingBudget; off_ok: 0 allowed), "level" (thinkingLevel)
GEMINI: list[tuple[str, dict[str, Any]]] = [
    (r"gemini-2\.0", {"max": 8192, "thinking": "none"}),
    (r"gemini-2\.5-pro", {"max": 65536, "thinking": "budget", "off_ok": False}),
    (r"gemini-2\.5", {"max": 65536, "thinking": "budget", "off_ok": True}),
    (r"gemini-3", {"max": 65536, "thinking": "level"}),
]


def _ge_error(message: str) -> ApiError:
    return ApiError(400, message, etype="INVALID_ARGUMENT")


def check_gemini(model: str, body: dict[str, Any]) -> None:
    """generateContent: output limit and the thinking knob per generation."""
    rules = _family(model, GEMINI)
    if rules is None:
        return
    gen = body.get("generationConfig") or body.get("generation_config") or {}
    asked = gen.get("maxOutputTokens", gen.get("max_output_tokens"))
    if isinstance(asked, int) and asked > rules["max"]:  # paraphrased (Vertex AI's wording)
        raise _ge_error(
            f"Unable to submit request because it has a maxOutputTokens value of {asked} but the supported range is "
            f"from 1 (inclusive) to {rules['max'] + 1} (exclusive). Update the value and try again."
        )
    thinking = gen.get("thinkingConfig") or gen.get("thinking_config") or {}
    level = thinking.get("thinkingLevel", thinking.get("thinking_level"))
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    if rules["thinking"] == "none" and (level is not None or budget not in (None, 0)):  # paraphrased
        raise _ge_error("Thinking is not supported for this model.")
    if rules["thinking"] == "budget" and level is not None:  # paraphrased
        raise _ge_error("Thinking level is not supported for this model.")
    if rules["thinking"] == "budget" and budget == 0 and not rules["off_ok"]:  # reported
        raise _ge_error("Budget 0 is invalid. This model only works in thinking mode.")
    if level is not None and budget is not None:  # paraphrased
        raise _ge_error("thinking_level and thinking_budget cannot be set together.")
