"""What a target model accepts, and shaping a translated request to it (pure).

``Capabilities`` is one model's entry as the gateway uses it: limits, the reasoning knob its API takes, which sampling
parameters it accepts, what content it reads, prices. ``extproc.core.models`` builds them from the catalog shipped
with the gateway (``extproc/core/models.yaml``) and the config's ``models[].capabilities``; ``parse`` here checks one
mapping of them (the catalog's entries and the config's overrides alike).

``shape`` runs on every translated request between the client format's ``parse_request`` and the provider format's
``build_request``: it changes what the target cannot take and returns the list of ``Adaptation`` it made (a
response header, a debug log line and a metric show them), or raises a 400 when honouring the request would change its
meaning (images to a text-only model). The rules, in order, are in ``docs/capabilities.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from extproc.translation import canonical as c
from extproc.translation.errors import invalid

# Reasoning knobs a provider API takes (``Capabilities.reasoning`` lists those a model accepts, the preferred first):
EFFORT = "effort"  # OpenAI ``reasoning_effort``
BUDGET = "budget"  # Anthropic ``thinking: {type: enabled, budget_tokens}``, Gemini ``thinkingBudget``
ADAPTIVE = "adaptive"  # Anthropic ``thinking: {type: adaptive}`` + ``output_config.effort``
LEVEL = "level"  # Gemini ``thinkingLevel``
KNOBS = (EFFORT, BUDGET, ADAPTIVE, LEVEL)
# Canonical effort values, weakest first ("none": no reasoning).
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_RANK = {e: i for i, e in enumerate(EFFORTS)}
# Sampling parameters a model may refuse (the canonical names; each format writes its own).
SAMPLING = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")
# Their values that change nothing (every API's default): removed without a report where the model takes no value.
_NEUTRAL: dict[str, float] = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
# Actions an adaptation reports.
DROPPED, CLAMPED, CONVERTED, HASHED = "dropped", "clamped", "converted", "hashed"
# Budgets that stand for an effort when a model takes efforts only (the OpenAI format's old mapping, extended).
_EFFORT_FOR_BUDGET = ((1024, "minimal"), (2048, "low"), (8192, "medium"), (24576, "high"), (32768, "xhigh"))


@dataclass(slots=True, frozen=True)
class Prices:
    """US dollars per million tokens; None: not published (or not separately billed: reasoning is billed as output
    when ``reasoning`` is None)."""

    input: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None
    output: float | None = None
    reasoning: float | None = None


@dataclass(slots=True, frozen=True)
class Capabilities:
    """What one target model accepts. ``known`` is False for the conservative default given to names no catalog
    entry matches: it never sends a knob a model may refuse (no reasoning knob), limits nothing it cannot know, and
    refuses no content."""

    entry: str = "unknown"  # the catalog entry it came from ("unknown" for the default)
    known: bool = False
    context_window: int | None = None
    max_output_tokens: int | None = None
    reasoning: tuple[str, ...] = ()  # knobs accepted, the one the gateway uses first; () : not a reasoning model
    efforts: tuple[str, ...] = ()  # effort/level values accepted (canonical names), for EFFORT, ADAPTIVE, LEVEL
    budget_min: int | None = None  # thinking budget range, for BUDGET
    budget_max: int | None = None
    thinking_off: bool = True  # the model can answer without reasoning (False: Gemini 2.5 Pro, 3.x; o-series; ...)
    sampling: frozenset[str] = frozenset(SAMPLING)  # sampling parameters accepted
    exclusive: tuple[tuple[str, str], ...] = ()  # pairs never sent together: the first is kept
    sampling_while_thinking: bool = True  # False: temperature/top_k refused while thinking, top_p only >= 0.95
    temperature_max: float | None = None
    vision: bool = True
    documents: bool = True
    tools: bool = True
    structured_output: bool = True
    user_max_length: int | None = None  # longer end-user ids are replaced by a hash
    released: int = 0  # unix time of release (OpenAI listings' ``created``)
    prices: Prices = field(default_factory=Prices)

    @property
    def thinks(self) -> bool:
        return bool(self.reasoning)


@dataclass(slots=True, frozen=True)
class Adaptation:
    """One change ``shape`` made: ``parameter`` (canonical name), ``action`` and, for clamps/conversions, the value
    sent instead."""

    parameter: str
    action: str
    value: str | None = None

    def __str__(self) -> str:
        done = f"{self.parameter}={self.action}"
        return done if self.value is None else f"{done}({self.value})"


def describe(caps: Capabilities) -> str:
    """One line for ``check-config``: every capability the gateway will use."""

    def num(v: int | None) -> str:
        return "?" if v is None else str(v)

    def money(v: float | None) -> str:
        return "?" if v is None else f"{v:g}"

    source = f"catalog entry {caps.entry}" if caps.known else "unknown model: conservative default"
    if not caps.reasoning:
        reasoning = "none"
    else:
        reasoning = "/".join(caps.reasoning)
        if caps.efforts:
            reasoning += " [" + " ".join(caps.efforts) + "]"
        if BUDGET in caps.reasoning:
            reasoning += f" budget {num(caps.budget_min)}..{num(caps.budget_max)}"
        if not caps.thinking_off:
            reasoning += " (always on)"
    sampling = " ".join(s for s in SAMPLING if s in caps.sampling) or "none"
    if caps.exclusive:
        sampling += "; " + ", ".join(f"{a} xor {b} ({a} wins)" for a, b in caps.exclusive)
    if not caps.sampling_while_thinking:
        sampling += "; none while thinking but top_p >= 0.95"
    inputs = [n for n in ("vision", "documents", "tools", "structured_output") if getattr(caps, n)]
    p = caps.prices
    prices = (
        f"in {money(p.input)}, cached {money(p.cached_input)}, cache write {money(p.cache_write)}, "
        f"out {money(p.output)}, reasoning {money(p.reasoning) if p.reasoning is not None else 'as output'} $/M"
    )
    return (
        f"{source}; context {num(caps.context_window)}, max output {num(caps.max_output_tokens)}; "
        f"reasoning {reasoning}; sampling {sampling}; accepts {' '.join(inputs) or 'text only'}; prices {prices}"
    )


def header_value(adaptations: list[Adaptation]) -> str:
    """``max_tokens=clamped(16384),reasoning_effort=dropped``: what the ``x-ai-gateway-adapted`` header carries."""
    return ",".join(str(a) for a in adaptations)


# ---------------------------------------------------------------------------------------------------------------------
# Parsing one mapping (catalog entries and config overrides)
# ---------------------------------------------------------------------------------------------------------------------
_BOOLS = ("thinking_off", "sampling_while_thinking", "vision", "documents", "tools", "structured_output")
_INTS = ("context_window", "max_output_tokens", "budget_min", "budget_max", "user_max_length")
_PRICES = ("input", "cached_input", "cache_write", "output", "reasoning")
FIELDS = (
    *_INTS, *_BOOLS, "reasoning", "efforts", "sampling", "exclusive", "temperature_max", "released", "prices",
)  # fmt: skip


def parse(data: Any, base: Capabilities, *, entry: str | None = None, known: bool | None = None) -> Capabilities:
    """``base`` with the fields of the mapping ``data`` applied; ``ValueError`` names the first bad field (unknown
    names included). ``released`` is a date (``2024-07-18``) or unix seconds."""
    if not isinstance(data, dict):
        raise ValueError("capabilities must be a mapping")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise ValueError(f"unknown capability '{key}' (known: {', '.join(sorted(FIELDS))})")
        changes[key] = _field(key, value, base)
    if entry is not None:
        changes["entry"] = entry
    if known is not None:
        changes["known"] = known
    caps = replace(base, **changes)
    _check(caps)
    return caps


def _field(key: str, value: Any, base: Capabilities) -> Any:
    if key in _INTS:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"'{key}' must be a non-negative integer or null")
        return value
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise ValueError(f"'{key}' must be true or false")
        return value
    if key == "reasoning":
        return _names(key, value, KNOBS)
    if key == "efforts":
        return _names(key, value, EFFORTS)
    if key == "sampling":
        return frozenset(_names(key, value, SAMPLING))
    if key == "exclusive":
        if not isinstance(value, list):
            raise ValueError("'exclusive' must be a list of [kept, dropped] pairs of sampling parameters")
        pairs = []
        for pair in value:
            names = _names(key, pair, SAMPLING)
            if len(names) != 2 or names[0] == names[1]:
                raise ValueError("'exclusive' must be a list of [kept, dropped] pairs of sampling parameters")
            pairs.append((names[0], names[1]))
        return tuple(pairs)
    if key == "temperature_max":
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError("'temperature_max' must be a positive number or null")
        return float(value)
    if key == "released":
        return _released(value)
    # prices: merged field by field onto the base's
    if not isinstance(value, dict):
        raise ValueError("'prices' must be a mapping of " + ", ".join(_PRICES) + " (USD per million tokens)")
    got: dict[str, float | None] = {}
    for name, price in value.items():
        if name not in _PRICES:
            raise ValueError(f"unknown price '{name}' (known: {', '.join(_PRICES)})")
        if price is not None and (not isinstance(price, int | float) or isinstance(price, bool) or price < 0):
            raise ValueError(f"price '{name}' must be a non-negative number (USD per million tokens) or null")
        got[name] = None if price is None else float(price)
    return replace(base.prices, **got)


def _names(key: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' must be a list of: {', '.join(allowed)}")
    for v in value:
        if v not in allowed:
            raise ValueError(f"'{key}': unknown value '{v}' (known: {', '.join(allowed)})")
    return tuple(value)


def _released(value: Any) -> int:
    import datetime as dt

    if isinstance(value, bool):
        raise ValueError("'released' must be a date (YYYY-MM-DD)")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.date):  # YAML reads an unquoted 2024-07-18 as a date
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp())
    if isinstance(value, str):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("'released' must be a date (YYYY-MM-DD)") from None
        return _released(day)
    raise ValueError("'released' must be a date (YYYY-MM-DD)")


def _check(caps: Capabilities) -> None:
    """Fields that only make sense together."""
    if BUDGET in caps.reasoning and (caps.budget_min is None or caps.budget_max is None):
        raise ValueError("a model with the 'budget' reasoning knob needs budget_min and budget_max")
    if caps.budget_min is not None and caps.budget_max is not None and caps.budget_min > caps.budget_max:
        raise ValueError("budget_min is greater than budget_max")
    if any(k in caps.reasoning for k in (EFFORT, ADAPTIVE, LEVEL)) and not caps.efforts:
        raise ValueError("a model with an effort or level knob needs 'efforts' (the values it accepts)")


# ---------------------------------------------------------------------------------------------------------------------
# Shaping a canonical request to a target
# ---------------------------------------------------------------------------------------------------------------------
def shape(req: c.Request, caps: Capabilities, model: str) -> list[Adaptation]:
    """Change ``req`` so that ``model`` (described by ``caps``) accepts it; the changes made, in order. Raises a 400
    ``GatewayError`` when the request cannot be honoured without changing its meaning."""
    out: list[Adaptation] = []
    if caps.known:
        _refuse_content(req, caps, model)
    limit = caps.max_output_tokens
    if limit is not None and req.max_tokens is not None and req.max_tokens > limit:
        req.max_tokens = limit
        out.append(Adaptation("max_tokens", CLAMPED, str(limit)))
    thinking = _shape_reasoning(req, caps, out)
    _shape_sampling(req, caps, thinking, out)
    limit = caps.user_max_length
    if limit is not None and req.user is not None and len(req.user) > limit:
        req.user = hashlib.sha256(req.user.encode()).hexdigest()[: min(limit, 32)]
        out.append(Adaptation("user", HASHED))
    return out


def _refuse_content(req: c.Request, caps: Capabilities, model: str) -> None:
    if not (caps.vision and caps.documents and caps.tools and caps.structured_output):
        images = documents = False
        for msg in req.messages:
            for part in msg.parts:
                images = images or isinstance(part, c.Image)
                documents = documents or isinstance(part, c.Document)
                if isinstance(part, c.ToolResult):
                    images = images or any(isinstance(p, c.Image) for p in part.content)
                    documents = documents or any(isinstance(p, c.Document) for p in part.content)
        if images and not caps.vision:
            raise invalid(f"model '{model}' does not accept images: send text only, or use a model with vision")
        if documents and not caps.documents:
            raise invalid(f"model '{model}' does not accept documents (PDF): send text only, or use another model")
        if req.tools and not caps.tools:
            raise invalid(f"model '{model}' does not support tools (function calling)", param="tools")
        rf = req.response_format
        if rf is not None and rf.type == "json_schema" and not caps.structured_output:
            raise invalid(f"model '{model}' does not support structured output (a JSON schema)")


def _nearest(effort: str, accepted: tuple[str, ...]) -> str:
    """The accepted effort closest to ``effort``; between two equally close, the weaker."""
    rank = _RANK[effort]
    return min(accepted, key=lambda e: (abs(_RANK[e] - rank), _RANK[e]))


def _effort_for_budget(budget: int) -> str:
    for top, effort in _EFFORT_FOR_BUDGET:
        if budget <= top:
            return effort
    return "max"


def _shape_reasoning(req: c.Request, caps: Capabilities, out: list[Adaptation]) -> bool:
    """Reasoning knobs the model takes, at values it takes. Returns whether the request will think."""
    effort, budget = req.reasoning_effort, req.thinking_budget
    if effort is None and budget is None:
        return False
    knobs = caps.reasoning
    if not knobs:  # not a reasoning model (or not known to be one): no knob at all
        if effort is not None:
            req.reasoning_effort = None
            out.append(Adaptation("reasoning_effort", DROPPED))
        if budget is not None:
            req.thinking_budget = None
            out.append(Adaptation("thinking_budget", DROPPED))
        return False
    off = effort == "none" or (effort is None and budget == 0)
    if off and not caps.thinking_off:
        # It cannot stop thinking: the weakest effort it takes stands for "none" (a budget model keeps its default).
        if effort is not None:
            req.reasoning_effort = None
        if budget is not None:
            req.thinking_budget = None
        weakest = min(caps.efforts, key=_RANK.__getitem__) if caps.efforts and knobs[0] != BUDGET else None
        if weakest is not None:
            req.reasoning_effort = weakest
            out.append(Adaptation("reasoning_effort" if effort is not None else "thinking_budget", CLAMPED, weakest))
        else:
            out.append(Adaptation("reasoning_effort" if effort is not None else "thinking_budget", DROPPED))
        return True
    if off:
        return False
    if budget is not None and budget > 0 and BUDGET not in knobs:
        # A token budget for a model that takes efforts only: the effort that budget stands for.
        req.thinking_budget = None
        if effort is None:
            effort = req.reasoning_effort = _effort_for_budget(budget)
            out.append(Adaptation("thinking_budget", CONVERTED, effort))
        else:
            out.append(Adaptation("thinking_budget", DROPPED))
    if budget is not None and budget > 0 and BUDGET in knobs:
        low, high = caps.budget_min, caps.budget_max
        if low is not None and budget < low:
            req.thinking_budget = low
            out.append(Adaptation("thinking_budget", CLAMPED, str(low)))
        elif high is not None and budget > high:
            req.thinking_budget = high
            out.append(Adaptation("thinking_budget", CLAMPED, str(high)))
    if effort is not None and effort != "none" and caps.efforts and effort not in caps.efforts:
        near = req.reasoning_effort = _nearest(effort, caps.efforts)
        out.append(Adaptation("reasoning_effort", CLAMPED, near))
    return True


def _shape_sampling(req: c.Request, caps: Capabilities, thinking: bool, out: list[Adaptation]) -> None:
    accepted = caps.sampling
    for name in SAMPLING:
        value = getattr(req, name)
        if value is not None and name not in accepted:
            setattr(req, name, None)
            if value != _NEUTRAL.get(name):
                out.append(Adaptation(name, DROPPED))
    if thinking and not caps.sampling_while_thinking:
        # Anthropic: extended/adaptive thinking refuses temperature and top_k, and top_p below 0.95.
        for name in ("temperature", "top_k"):
            if getattr(req, name) is not None:
                setattr(req, name, None)
                out.append(Adaptation(name, DROPPED))
        if req.top_p is not None and req.top_p < 0.95:
            req.top_p = None
            out.append(Adaptation("top_p", DROPPED))
    for kept, dropped in caps.exclusive:
        if getattr(req, kept) is not None and getattr(req, dropped) is not None:
            setattr(req, dropped, None)
            out.append(Adaptation(dropped, DROPPED))
    top = caps.temperature_max
    if top is not None and req.temperature is not None and req.temperature > top:
        req.temperature = top
        out.append(Adaptation("temperature", CLAMPED, f"{top:g}"))
