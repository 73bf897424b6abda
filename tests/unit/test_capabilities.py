"""The model capability catalog, its overrides in the config, the listings fed from it, and shaping requests to it."""

from __future__ import annotations

import json
import re

import orjson
import pytest
import yaml
from prometheus_client import generate_latest

from extproc.core import catalog as listing
from extproc.core import models
from extproc.core.config import ConfigError, build_config, summary
from extproc.core.exchange import ADAPTED_HEADER, CONTINUE, Exchange, Forward, Gateway, Reply
from extproc.observability import logs
from extproc.observability.metrics import Metrics
from extproc.translation import canonical as c
from extproc.translation.capabilities import FIELDS, Adaptation, Capabilities, header_value, parse, shape
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic, gemini, openai, registry
from extproc.translation.formats.contract import BuildOptions
from tests.paths import RECORDED_CLIENTS

CATALOG = models.catalog()


def caps(ptype: str, model: str) -> Capabilities:
    return CATALOG.lookup(ptype, model)


def request(**kw: object) -> c.Request:
    return c.Request(model="m", messages=[c.Message("user", [c.Text("hi")])], **kw)  # type: ignore[arg-type]


def as_strings(adaptations: list[Adaptation]) -> list[str]:
    return [str(a) for a in adaptations]


# ---------------------------------------------------------------------------------------------------- the catalog
def test_every_shipped_entry_parses_and_names_only_known_capabilities() -> None:
    raw = yaml.safe_load(models.PATH.read_text())
    # every wire format a provider can speak has a section, or is an alias of one
    assert set(raw["formats"]) | set(raw["aliases"]) == set(registry.names())
    assert CATALOG.lookup("responses", "gpt-4o-mini") is CATALOG.lookup("openai", "gpt-4o-mini")
    for ptype, section in raw["formats"].items():
        for part in ("defaults", "unknown"):
            assert set(section[part]) <= set(FIELDS), (ptype, part)
        for entry in section["models"]:
            assert set(entry) - {"name", "match"} <= set(FIELDS), entry["name"]
            assert CATALOG.entry(ptype, entry["name"]).caps.known


def test_every_entry_is_reached_by_its_own_names() -> None:
    """No entry is shadowed by an earlier, more general one: each pattern's literal form matches its own entry."""
    for ptype, entries in CATALOG.entries.items():
        for e in entries:
            for pattern in e.patterns:
                name = re.sub(r"\[[^]]*\]", "9", pattern).replace("*", "zz9").replace("?", "x")
                got = CATALOG.match(ptype, name)
                assert got is not None and got.name == e.name, (ptype, pattern, got and got.name)


def test_a_catalog_with_an_unknown_capability_is_refused_with_the_entry_named() -> None:
    entry = {"name": "x", "match": ["x"], "vison": 1}
    bad = {"formats": {"openai": {"defaults": {}, "unknown": {}, "models": [entry]}}}
    with pytest.raises(models.CatalogError, match=r"models\[0\] \(x\): unknown capability 'vison'"):
        models.parse_catalog(bad)
    bad["formats"]["openai"]["models"][0] = {"name": "x", "match": ["x"], "reasoning": ["effort"]}
    with pytest.raises(models.CatalogError, match="needs 'efforts'"):
        models.parse_catalog(bad)


def test_lookup_by_snapshot_fine_tune_and_path_prefixed_names() -> None:
    assert caps("openai", "gpt-4o-mini-2024-07-18").max_output_tokens == 16384
    assert caps("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123").entry == "gpt-4o-mini"
    assert caps("openai", "openai/gpt-4o-mini").entry == "gpt-4o-mini"
    assert caps("anthropic", "claude-sonnet-4-5-20250929").exclusive == (("temperature", "top_p"),)
    assert caps("gemini", "gemini-2.5-flash-lite-preview-09-2025").budget_min == 512
    assert caps("gemini", "gemini-3.5-flash-lite").reasoning == ("level",)
    # a Claude name on an OpenAI-type provider is not an OpenAI model: the type's unknown default
    assert not caps("openai", "claude-sonnet-4-5").known


def test_unknown_models_get_no_reasoning_knob_and_no_limit() -> None:
    for ptype in registry.names():
        u = caps(ptype, "some-future-model")
        assert not u.known and u.reasoning == () and u.max_output_tokens is None
        assert u.vision and u.tools and u.documents  # content is never refused for a model nobody described
    assert caps("anthropic", "claude-next").sampling == frozenset()  # the newest Claude models refuse sampling


# ---------------------------------------------------------------------------------------------------- the config
def config(models_: list[dict], **top: object):
    return build_config({"version": "1", "models": models_, **top}, "t.yaml", {})


def test_config_override_extends_the_matched_entry() -> None:
    cfg = config([{"name": "mini", "provider": "openai", "target_model": "gpt-4o-mini",
                   "capabilities": {"max_output_tokens": 4000, "prices": {"input": 0.2}}}])  # fmt: skip
    got = cfg.models["mini"].capabilities
    assert got is not None
    assert got.max_output_tokens == 4000 and got.context_window == 128000
    assert (got.prices.input, got.prices.output) == (0.2, 0.60)


def test_config_like_starts_from_another_entry() -> None:
    cfg = config([{"name": "mine", "provider": "anthropic", "target_model": "claude-preview-x",
                   "capabilities": {"like": "claude-opus-4-6"}}])  # fmt: skip
    got = cfg.models["mine"].capabilities
    assert got is not None and got.known and got.reasoning == ("adaptive", "budget") and got.max_output_tokens == 128000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"vison": True}, r"models\[0\] \(m\)\.capabilities: unknown capability 'vison'"),
        ({"like": "gpt-9"}, r"'like': no openai catalog entry named 'gpt-9'"),
        ({"efforts": ["huge"]}, r"'efforts': unknown value 'huge'"),
        ({"enabled": "no"}, r"capabilities.enabled: expected true or false"),
        ("yes", r"expected a mapping of capabilities"),
    ],
)
def test_config_override_faults_are_named(override: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config([{"name": "m", "provider": "openai", "capabilities": override}])


def test_catalog_switched_off_for_the_gateway_or_one_model() -> None:
    off = config([{"name": "gpt-4o-mini", "provider": "openai"}], capabilities={"enabled": False})
    assert off.models["gpt-4o-mini"].capabilities is None
    one = config([{"name": "a", "provider": "openai", "target_model": "gpt-4o-mini",
                   "capabilities": {"enabled": False}},
                  {"name": "b", "provider": "openai", "target_model": "gpt-4o-mini"}])  # fmt: skip
    assert one.models["a"].capabilities is None and one.models["b"].capabilities is not None
    with pytest.raises(ConfigError, match="capabilities: expected"):
        config([], capabilities={"enabled": False, "other": 1})


def test_default_provider_names_are_looked_up_in_the_catalog() -> None:
    cfg = config([], default_provider="openai")
    provider = cfg.providers["openai"]
    assert cfg.capabilities("gpt-4o-mini", provider, "gpt-4o-mini").max_output_tokens == 16384  # type: ignore[union-attr]
    assert (
        config([], default_provider="openai", capabilities={"enabled": False}).capabilities(
            "gpt-4o-mini", provider, "gpt-4o-mini"
        )
        is None
    )


def test_check_config_prints_the_capabilities_used() -> None:
    cfg = config([{"name": "mini", "provider": "openai", "target_model": "gpt-4o-mini"},
                  {"name": "x", "provider": "gemini", "target_model": "gemma-9"},
                  {"name": "off", "provider": "openai", "capabilities": {"enabled": False}}])  # fmt: skip
    text = summary(cfg, {})
    assert "catalog entry gpt-4o-mini; context 128000, max output 16384; reasoning none" in text
    assert "prices in 0.15, cached 0.075" in text
    assert "unknown model: conservative default" in text
    assert "capabilities: off" in text


# ---------------------------------------------------------------------------------------------------- listings
def test_listings_report_the_catalogs_limits() -> None:
    cfg = config([{"name": "flash", "provider": "gemini", "target_model": "gemini-2.5-flash"},
                  {"name": "mini", "provider": "openai", "target_model": "gpt-4o-mini"},
                  {"name": "odd", "provider": "anthropic", "target_model": "claude-unknown"}])  # fmt: skip
    infos = listing.model_infos(cfg)
    g = orjson.loads(gemini.list_models(infos, "flash", ""))
    assert (g["inputTokenLimit"], g["outputTokenLimit"], g["thinking"]) == (1048576, 65536, True)
    o = orjson.loads(openai.list_models(infos, "mini", ""))
    assert o["created"] == 1721260800  # 2024-07-18, gpt-4o-mini's release
    a = orjson.loads(anthropic.list_models(infos, None, ""))
    by_id = {m["id"]: m for m in a["data"]}
    assert (by_id["mini"]["max_input_tokens"], by_id["mini"]["max_tokens"]) == (128000, 16384)
    assert "max_tokens" not in by_id["odd"]  # nothing invented for an unknown model
    assert "thinking" not in orjson.loads(gemini.list_models(infos, "odd", ""))


# ---------------------------------------------------------------------------------------------------- shaping
def recorded(name: str) -> dict:
    return json.loads((RECORDED_CLIENTS / name).read_text())


def test_claude_code_to_gpt_4o_mini() -> None:
    """Claude Code's own request (adaptive thinking, effort high, max_tokens 64000, a JSON user id) to gpt-4o-mini."""
    body = recorded("claude-code/messages-opus.json")
    req = anthropic.parse_request(body, model=body["model"])
    changes = shape(req, caps("openai", "gpt-4o-mini"), "gpt-4o-mini")
    assert as_strings(changes) == [
        "max_tokens=clamped(16384)",
        "reasoning_effort=dropped",
        "thinking_budget=dropped",
        "user=hashed",
    ]
    sent = orjson.loads(openai.build_request(req, model="gpt-4o-mini"))
    assert sent["max_completion_tokens"] == 16384
    assert "reasoning_effort" not in sent
    assert len(sent["user"]) <= 64 and sent["user"] != body["metadata"]["user_id"]
    again = anthropic.parse_request(body, model=body["model"])
    shape(again, caps("openai", "gpt-4o-mini"), "gpt-4o-mini")
    assert again.user == req.user  # the same end user gets the same id


def test_claude_code_haiku_request_to_an_openai_reasoning_model() -> None:
    body = recorded("claude-code/messages-haiku.json")  # thinking enabled, budget 31999, max_tokens 32000
    req = anthropic.parse_request(body, model=body["model"])
    changes = shape(req, caps("openai", "gpt-5-mini"), "gpt-5-mini")
    assert as_strings(changes) == ["thinking_budget=converted(xhigh)", "reasoning_effort=clamped(high)", "user=hashed"]
    sent = orjson.loads(openai.build_request(req, model="gpt-5-mini"))
    assert sent["reasoning_effort"] == "high" and sent["max_completion_tokens"] == 32000


def test_gemini_cli_to_claude_models() -> None:
    """Gemini CLI's router request: temperature 1, topP 0.95, topK 64, thinkingLevel HIGH."""
    body = recorded("gemini-cli/router-request.json")
    req = gemini.parse_request(body, model="claude-sonnet-4-5")
    changes = shape(req, caps("anthropic", "claude-sonnet-4-5"), "claude-sonnet-4-5")
    # thinking stays on: Anthropic refuses temperature and top_k with it; top_p 0.95 is allowed alone
    assert as_strings(changes) == ["temperature=dropped", "top_k=dropped"]
    # a model without thinking: the knob goes, and temperature wins over top_p on a model that refuses both
    req = gemini.parse_request(body, model="x")
    no_thinking = parse({"reasoning": []}, caps("anthropic", "claude-haiku-4-5"))
    assert as_strings(shape(req, no_thinking, "x")) == ["reasoning_effort=dropped", "top_p=dropped"]
    assert (req.temperature, req.top_p, req.top_k) == (1.0, None, 64)
    # Opus 4.7 and later take no sampling parameter at all (temperature 1 is the default: removed, nothing changed)
    req = gemini.parse_request(body, model="claude-opus-4-8")
    assert as_strings(shape(req, caps("anthropic", "claude-opus-4-8"), "claude-opus-4-8")) == [
        "top_p=dropped",
        "top_k=dropped",
    ]
    assert (req.temperature, req.top_p, req.top_k) == (None, None, None)
    # Claude 3.5 Haiku has no structured output: the router's JSON schema cannot be honoured, a clear 400
    req = gemini.parse_request(body, model="claude-3-5-haiku-latest")
    with pytest.raises(GatewayError, match="does not support structured output"):
        shape(req, caps("anthropic", "claude-3-5-haiku-latest"), "claude-3-5-haiku-latest")
    # gpt-4o-mini: no reasoning knob, no top_k in Chat Completions; temperature and top_p together are fine there
    req = gemini.parse_request(body, model="gpt-4o-mini")
    assert as_strings(shape(req, caps("openai", "gpt-4o-mini"), "gpt-4o-mini")) == [
        "reasoning_effort=dropped",
        "top_k=dropped",
    ]
    assert (req.temperature, req.top_p) == (1.0, 0.95)


def test_temperature_wins_over_top_p() -> None:
    req = request(temperature=0.2, top_p=0.9)
    assert as_strings(shape(req, caps("anthropic", "claude-haiku-4-5"), "h")) == ["top_p=dropped"]
    assert (req.temperature, req.top_p) == (0.2, None)
    alone = request(top_p=0.9)
    assert shape(alone, caps("anthropic", "claude-haiku-4-5"), "h") == [] and alone.top_p == 0.9


@pytest.mark.parametrize(
    ("model", "effort", "sent", "change"),
    [
        ("gpt-5", "xhigh", "high", "reasoning_effort=clamped(high)"),
        ("gpt-5", "none", "minimal", "reasoning_effort=clamped(minimal)"),  # gpt-5 cannot stop reasoning
        ("o3", "none", "low", "reasoning_effort=clamped(low)"),
        ("o3", "minimal", "low", "reasoning_effort=clamped(low)"),
        ("gpt-5.1", "none", "none", None),
        ("gpt-5.2", "xhigh", "xhigh", None),
        ("gpt-5.2", "max", "xhigh", "reasoning_effort=clamped(xhigh)"),
    ],
)
def test_openai_efforts_per_family(model: str, effort: str, sent: str, change: str | None) -> None:
    req = request(reasoning_effort=effort)
    assert as_strings(shape(req, caps("openai", model), model)) == ([change] if change else [])
    assert req.reasoning_effort == sent


def test_gemini_thinking_per_generation() -> None:
    pro = caps("gemini", "gemini-2.5-pro")
    req = request(thinking_budget=50000)
    assert as_strings(shape(req, pro, "p")) == ["thinking_budget=clamped(32768)"]
    off = request(thinking_budget=0)  # 2.5 Pro only works in thinking mode: the budget goes, it thinks by default
    assert as_strings(shape(off, pro, "p")) == ["thinking_budget=dropped"] and off.thinking_budget is None
    lite = request(thinking_budget=100)
    assert as_strings(shape(lite, caps("gemini", "gemini-2.5-flash-lite"), "l")) == ["thinking_budget=clamped(512)"]
    three = request(reasoning_effort="medium")  # Gemini 3 Pro takes low and high; between two, the weaker
    assert as_strings(shape(three, caps("gemini", "gemini-3-pro-preview"), "g")) == ["reasoning_effort=clamped(low)"]
    never_off = request(reasoning_effort="none")
    assert as_strings(shape(never_off, caps("gemini", "gemini-3-flash-preview"), "g")) == [
        "reasoning_effort=clamped(minimal)"
    ]
    two = request(reasoning_effort="high")  # 2.0 Flash does not think
    assert as_strings(shape(two, caps("gemini", "gemini-2.0-flash"), "g")) == ["reasoning_effort=dropped"]


def test_anthropic_adaptive_only_models_get_efforts_not_budgets() -> None:
    req = request(thinking_budget=4000)
    assert as_strings(shape(req, caps("anthropic", "claude-opus-4-7"), "o")) == ["thinking_budget=converted(medium)"]
    assert (req.reasoning_effort, req.thinking_budget) == ("medium", None)
    small = request(thinking_budget=500)  # enabled thinking needs 1024 at least
    assert as_strings(shape(small, caps("anthropic", "claude-sonnet-4-5"), "s")) == ["thinking_budget=clamped(1024)"]


def test_sampling_a_model_does_not_take_is_dropped_and_temperature_clamped() -> None:
    req = request(temperature=0.7, top_p=0.5, seed=3, top_k=5)
    got = as_strings(shape(req, caps("openai", "o4-mini"), "o4-mini"))
    assert got == ["temperature=dropped", "top_p=dropped", "top_k=dropped"] and req.seed == 3
    default = request(temperature=1.0, top_p=1.0)  # the APIs' defaults: removed, nothing reported
    assert shape(default, caps("openai", "gpt-5-nano"), "gpt-5-nano") == []
    assert (default.temperature, default.top_p) == (None, None)
    hot = request(temperature=1.5)
    assert as_strings(shape(hot, caps("anthropic", "claude-3-5-haiku"), "h")) == ["temperature=clamped(1)"]
    assert hot.temperature == 1.0


def test_content_the_model_cannot_read_is_refused_not_dropped() -> None:
    img = c.Request(model="m", messages=[c.Message("user", [c.Text("what is this"), c.Image("image/png", "aGk=")])])
    with pytest.raises(GatewayError) as err:
        shape(img, caps("openai", "o3-mini"), "o3-mini")
    assert err.value.status == 400 and "does not accept images" in err.value.message
    pdf = c.Request(model="m", messages=[c.Message("user", [c.Document("application/pdf", "JVBE")])])
    with pytest.raises(GatewayError, match="does not accept documents"):
        shape(pdf, caps("anthropic", "claude-3-haiku"), "h")
    schema = request(response_format=c.ResponseFormat("json_schema", {"type": "object"}))
    with pytest.raises(GatewayError, match="structured output"):
        shape(schema, caps("anthropic", "claude-3-5-haiku"), "h")
    assert shape(img, caps("openai", "some-local-model"), "x") == []  # unknown: passed on, the provider decides


def test_nothing_to_change_changes_nothing() -> None:
    req = request(max_tokens=100, temperature=0.5)
    before = repr(req)
    assert shape(req, caps("openai", "gpt-4o-mini"), "gpt-4o-mini") == []
    assert repr(req) == before


def test_header_value() -> None:
    got = header_value([Adaptation("max_tokens", "clamped", "16384"), Adaptation("reasoning_effort", "dropped")])
    assert got == "max_tokens=clamped(16384),reasoning_effort=dropped"


# ---------------------------------------------------------------------------------------------------- the exchange
ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g-k"}


def run(body: dict, path: str, **top: object) -> tuple[Exchange, Forward, Forward]:
    """One exchange to the end of the response headers: (exchange, request body action, response headers action)."""
    data = {"version": "1", "models": [{"name": "mini", "provider": "openai", "target_model": "gpt-4o-mini"},
                                       {"name": "sonnet", "provider": "anthropic",
                                        "target_model": "claude-sonnet-4-5-20250929"}], **top}  # fmt: skip
    ex = Exchange(Gateway(build_config(data, "t.yaml", ENV)))
    raw = orjson.dumps(body)
    ex.on_request_headers({":method": "POST", ":path": path, "content-length": str(len(raw))}, end_of_stream=False)
    fwd = ex.on_request_body(raw)
    assert isinstance(fwd, Forward), fwd
    return ex, fwd, ex.on_response_headers({":status": "200", "content-type": "application/json"})


def test_exchange_shapes_claude_codes_request_for_gpt_4o_mini_and_says_so() -> None:
    body = {**recorded("claude-code/messages-opus.json"), "model": "mini", "stream": False}
    ex, up, down = run(body, "/anthropic/v1/messages")
    sent = orjson.loads(up.body or b"")
    assert sent["max_completion_tokens"] == 16384 and "reasoning_effort" not in sent and len(sent["user"]) <= 64
    adapted = dict(down.set_headers)[ADAPTED_HEADER]
    assert adapted == "max_tokens=clamped(16384),reasoning_effort=dropped,thinking_budget=dropped,user=hashed"
    assert [str(a) for a in ex.record.adaptations or ()] == adapted.split(",")
    # the catalog switched off: the request goes as translated (what gpt-4o-mini answers 400 to), no header
    ex, up, down = run(body, "/anthropic/v1/messages", capabilities={"enabled": False})
    sent = orjson.loads(up.body or b"")
    assert (sent["max_completion_tokens"], sent["reasoning_effort"]) == (64000, "high")
    assert ADAPTED_HEADER not in dict(down.set_headers) and ex.record.adaptations is None


def test_a_provider_cannot_claim_the_gateway_adapted_its_request() -> None:
    body = {"model": "mini", "messages": [{"role": "user", "content": "hi"}]}
    ex = Exchange(Gateway(build_config({"version": "1", "models": [{"name": "mini", "provider": "openai"}]}, "t", ENV)))
    raw = orjson.dumps(body)
    ex.on_request_headers({":method": "POST", ":path": "/openai/v1/chat/completions"}, end_of_stream=False)
    ex.on_request_body(raw)
    down = ex.on_response_headers({":status": "200", "content-type": "application/json", ADAPTED_HEADER: "x=y"})
    assert ADAPTED_HEADER in down.remove_headers and ADAPTED_HEADER not in dict(down.set_headers)


def test_exchange_refuses_what_would_change_the_meaning_in_the_clients_format() -> None:
    body = recorded("gemini-cli/router-request.json")  # a JSON schema, to a Claude without structured output
    data = {"version": "1", "models": [{"name": "old", "provider": "anthropic", "target_model": "claude-3-5-haiku"}]}
    ex = Exchange(Gateway(build_config(data, "t.yaml", ENV)))
    raw = orjson.dumps(body)
    path = "/gemini/v1beta/models/old:generateContent"
    ex.on_request_headers({":method": "POST", ":path": path, "content-length": str(len(raw))}, end_of_stream=False)
    reply = ex.on_request_body(raw)
    assert isinstance(reply, Reply) and reply.status == 400
    err = orjson.loads(reply.body)["error"]
    assert err["status"] == "INVALID_ARGUMENT" and "does not support structured output" in err["message"]


def test_an_unchanged_request_gets_no_header() -> None:
    body = {"model": "mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    _, _, down = run(body, "/anthropic/v1/messages")
    assert down is CONTINUE


def test_metric_and_log_lines_name_each_adaptation() -> None:
    body = {**recorded("claude-code/messages-opus.json"), "model": "mini", "stream": False}
    ex, _, _ = run(body, "/anthropic/v1/messages")
    rec = ex.record
    rec.model_label = "mini"
    metrics = Metrics()
    metrics.done(rec, 0.1, 0.001, active=False)
    text = generate_latest(metrics.registry).decode()
    for parameter, action in (("max_tokens", "clamped"), ("reasoning_effort", "dropped"), ("user", "hashed")):
        line = (
            f'proxy_request_adaptations_total{{action="{action}",model="mini",parameter="{parameter}",'
            f'provider="openai"}} 1.0'
        )
        assert line in text
    debug = logs.adaptation_line(rec)
    assert (
        debug["level"] == "debug"
        and {"parameter": "max_tokens", "action": "clamped", "value": "16384"} in (debug["adaptations"])
    )
    assert logs.request_line(rec, 0.1)["adapted"].startswith("max_tokens=clamped(16384),")


# ---------------------------------------------------------------------------------------------------- the formats
def build_anthropic(req: c.Request, model: str, on: bool = True) -> dict:
    options = BuildOptions(capabilities=caps("anthropic", model) if on else None)
    shape(req, caps("anthropic", model), model) if on else None
    return orjson.loads(anthropic.build_request(req, model=model, options=options))


def test_anthropic_thinking_knob_comes_from_the_capabilities() -> None:
    got = build_anthropic(request(thinking_budget=4000, max_tokens=8000), "claude-opus-4-7")
    assert got["thinking"] == {"type": "adaptive"} and got["output_config"] == {"effort": "medium"}
    got = build_anthropic(request(reasoning_effort="high", max_tokens=8000), "claude-opus-4-6")
    assert got["thinking"] == {"type": "adaptive"} and got["output_config"] == {"effort": "high"}
    got = build_anthropic(request(reasoning_effort="high", max_tokens=30000), "claude-haiku-4-5")
    assert got["thinking"] == {"type": "enabled", "budget_tokens": 16384} and "output_config" not in got
    # off: 'disabled' only where the model takes budgets; the adaptive-only models refuse that type
    assert build_anthropic(request(reasoning_effort="none"), "claude-haiku-4-5")["thinking"] == {"type": "disabled"}
    assert "thinking" not in build_anthropic(request(reasoning_effort="none"), "claude-opus-4-7")
    # an alias the name guess cannot read: the catalog (via like:) decides, not the guess
    alias = parse({}, caps("anthropic", "claude-sonnet-4-5"))
    req = request(reasoning_effort="high", max_tokens=30000)
    opts = BuildOptions(capabilities=alias)
    got = orjson.loads(anthropic.build_request(req, model="my-sonnet", options=opts))
    assert got["thinking"]["type"] == "enabled"
    guess = orjson.loads(anthropic.build_request(request(reasoning_effort="high"), model="my-sonnet"))
    assert guess["thinking"] == {"type": "adaptive"}  # without capabilities: the old guess (unknown names are new)


def test_anthropic_default_max_tokens_stays_under_the_models_limit() -> None:
    got = build_anthropic(request(reasoning_effort="max"), "claude-opus-4-1")  # budget 32768 + default 4096 > 32000
    assert got["max_tokens"] == 32000 and got["thinking"] == {"type": "enabled", "budget_tokens": 31999}
    assert build_anthropic(request(), "claude-3-haiku")["max_tokens"] == 4096


def test_gemini_thinking_knob_comes_from_the_capabilities() -> None:
    def thinking(model: str, **kw: object) -> dict:
        req = request(**kw)
        shape(req, caps("gemini", model), model)
        opts = BuildOptions(capabilities=caps("gemini", model))
        return orjson.loads(gemini.build_request(req, model=model, options=opts))["generationConfig"]["thinkingConfig"]

    assert thinking("gemini-2.5-flash", reasoning_effort="high") == {"thinkingBudget": 24576, "includeThoughts": True}
    assert thinking("gemini-3-pro-preview", reasoning_effort="high") == {
        "thinkingLevel": "HIGH",
        "includeThoughts": True,
    }
    assert thinking("gemini-3-flash-preview", reasoning_effort="none") == {
        "thinkingLevel": "MINIMAL",
        "includeThoughts": True,
    }
    # a Gemini 3 name behind an alias: thinkingLevel because the capabilities say so (the name guess would say budget)
    req = request(reasoning_effort="low")
    opts = BuildOptions(capabilities=caps("gemini", "gemini-3-flash"))
    got = orjson.loads(gemini.build_request(req, model="gemini-2.0-alias", options=opts))
    assert got["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "LOW"
