"""Model targets and the fallback settings: the YAML a model with several targets is written in, and every fault it
can have refused with one message naming the entry (docs/fallback.md, docs/configuration.md)."""

from __future__ import annotations

import pytest

from extproc.core.config import ConfigError, build_config, summary
from extproc.core.targets import ModelTarget


def cfg(models: list[dict], **extra: object):
    return build_config({"version": "1", "models": models, **extra}, "t.yaml", {})


def refused(models: list[dict], **extra: object) -> str:
    with pytest.raises(ConfigError) as exc:
        cfg(models, **extra)
    return str(exc.value)


SMART = {
    "name": "smart",
    "targets": [
        {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        {"balance": [{"provider": "openai", "model": "gpt-4.1", "weight": 3}, {"provider": "gemini", "weight": 1}]},
    ],
}


def test_targets_are_levels_in_order_with_weights() -> None:
    c = cfg([SMART])
    m = c.models["smart"]
    assert m.fallback
    assert m.targets == (
        (ModelTarget("anthropic", "claude-sonnet-4-5"),),
        (ModelTarget("openai", "gpt-4.1", 3), ModelTarget("gemini", "smart", 1)),  # model defaults to the name
    )
    # The primary is what a single-target lookup (token counting, listings) sees.
    prov, target = c.resolve("smart")  # type: ignore[misc]
    assert (prov.name, target) == ("anthropic", "claude-sonnet-4-5")
    assert "smart via anthropic/claude-sonnet-4-5 then openai/gpt-4.1 (3) or gemini/smart (1)" in summary(c, {})


def test_the_seed_form_and_a_one_target_list_are_single_target() -> None:
    c = cfg([{"name": "a", "provider": "openai"}, {"name": "b", "targets": [{"provider": "gemini", "model": "g"}]}])
    assert not c.models["a"].fallback and not c.models["b"].fallback
    assert c.models["b"].levels == () and (c.models["b"].provider, c.models["b"].target_model) == ("gemini", "g")


def test_fallbacks_append_other_models_targets() -> None:
    c = cfg(
        [
            {"name": "a", "provider": "openai", "target_model": "gpt-a", "fallbacks": "b"},
            {"name": "b", "provider": "anthropic", "target_model": "claude-b", "fallbacks": ["c"]},
            {"name": "c", "provider": "gemini", "target_model": "gem-c"},
        ]
    )
    labels = [[t.label for t in level] for level in c.models["a"].targets]
    assert labels == [["openai/gpt-a"], ["anthropic/claude-b"], ["gemini/gem-c"]]
    assert [[t.label for t in lv] for lv in c.models["b"].targets] == [["anthropic/claude-b"], ["gemini/gem-c"]]
    assert not c.models["c"].fallback
    # Every provider a target names gets its Envoy cluster and key.
    assert [p.name for p in c.used_providers()] == ["anthropic", "gemini", "openai"]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            [{"name": "m", "targets": [{"provider": "nope", "model": "x"}]}],
            "models[0] (m).targets[0]: unknown provider",
        ),
        ([{"name": "m", "targets": []}], "models[0] (m).targets: expected a non-empty list"),
        ([{"name": "m", "targets": [{"balance": []}]}], "models[0] (m).targets[0].balance: expected a non-empty list"),
        (
            [{"name": "m", "targets": [{"provider": "openai", "weight": 0}, {"provider": "gemini"}]}],
            "models[0] (m).targets[0]: 'weight' must be a whole number greater than zero (got 0)",
        ),
        (
            [{"name": "m", "targets": [{"balance": [{"provider": "openai", "weight": -2}]}]}],
            "models[0] (m).targets[0].balance[0]: 'weight' must be a whole number greater than zero (got -2)",
        ),
        (
            [{"name": "m", "targets": [{"provider": "openai", "weight": 1.5}]}],
            "'weight' must be a whole number greater than zero (got 1.5)",
        ),
        (
            [{"name": "m", "targets": [{"provider": "openai", "model": "g"}, {"provider": "openai", "model": "g"}]}],
            "models[0] (m): target openai/g is listed twice (in its targets)",
        ),
        (
            [
                {"name": "a", "provider": "openai", "target_model": "x", "fallbacks": "b"},
                {"name": "b", "provider": "openai", "target_model": "x"},
            ],
            "models[0] (a): target openai/x is listed twice (through its fallbacks)",
        ),
        (
            [
                {"name": "a", "provider": "openai", "fallbacks": "b"},
                {"name": "b", "provider": "gemini", "fallbacks": "c"},
                {"name": "c", "provider": "anthropic", "fallbacks": "a"},
            ],
            "models[2] (c).fallbacks: fallbacks form a cycle: a -> b -> c -> a",  # the entry that closes it
        ),
        ([{"name": "a", "provider": "openai", "fallbacks": "a"}], "fallbacks form a cycle: a -> a"),
        ([{"name": "a", "provider": "openai", "fallbacks": "ghost"}], "models[0] (a).fallbacks: unknown model 'ghost'"),
        ([{"name": "a", "provider": "openai", "fallbacks": []}], "expected a model name or a non-empty list"),
        (
            [{"name": "m", "provider": "openai", "targets": [{"provider": "gemini"}]}],
            "models[0] (m): give either 'provider' (and 'target_model') or 'targets', not both",
        ),
        ([{"name": "m", "targets": [{"provider": "openai", "region": "x"}]}], "unknown field 'region'"),
        ([{"name": "m", "targets": [{"balance": [{"provider": "openai"}], "weight": 2}]}], "'balance' takes no other"),
    ],
)
def test_faults_are_refused_naming_the_entry(models: list[dict], message: str) -> None:
    assert message in refused(models)


def test_fallback_settings() -> None:
    c = cfg(
        [SMART],
        fallback={
            "per_try_timeout": "20s",
            "retry_after_cap": "500ms",
            "retry_budget": 25,
            "min_retry_concurrency": 5,
            "cooldown": {"failures": 4, "interval": "2s", "duration": "1m", "max_percent": 50, "rate_limited": False},
        },
    )
    p = c.fallback
    assert (p.per_try_timeout, p.retry_after_cap, p.retry_budget_percent, p.min_retry_concurrency) == (20, 0.5, 25, 5)
    cool = p.cooldown
    assert (cool.failures, cool.interval, cool.duration, cool.max_percent, cool.rate_limited) == (4, 2, 60, 50, False)
    defaults = cfg([SMART]).fallback
    assert defaults.per_try_timeout is None and defaults.retry_budget_percent is None
    assert defaults.max_concurrent_retries == 1000 and defaults.cooldown.rate_limited


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        ({"per_try_timeout": "soon"}, "fallback.per_try_timeout: 'soon' is not a duration"),
        ({"retry_budget": 0}, "fallback.retry_budget: expected a percentage"),
        ({"retry_budget": 101}, "fallback.retry_budget: expected a percentage"),
        ({"max_concurrent_retries": 0}, "fallback.max_concurrent_retries: expected a whole number"),
        ({"cooldown": {"failures": 0}}, "fallback.cooldown.failures: expected a whole number"),
        ({"cooldown": {"max_percent": 101}}, "fallback.cooldown.max_percent: expected a whole number from 1 to 100"),
        ({"cooldown": {"rate_limited": "yes"}}, "fallback.cooldown.rate_limited: expected true or false"),
        ({"retries": 3}, "fallback: unknown field 'retries'"),
    ],
)
def test_bad_fallback_settings_are_refused(fallback: dict, message: str) -> None:
    assert message in refused([SMART], fallback=fallback)
