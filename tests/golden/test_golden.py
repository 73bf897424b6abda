"""Golden translation tests: every client format x provider type x case in ``tests/golden`` (README.md here).

``AI_GATEWAY_GOLDEN=regen python -m pytest tests/golden`` rewrites the expected files instead of comparing; every
regenerated diff is reviewed (``git diff tests/golden``) before it is committed.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.golden.harness import (
    CLIENT_OUTPUTS,
    CLIENT_REQUEST,
    UPSTREAM_REQUEST,
    WIRE,
    Case,
    assert_json_equal,
    assert_output_equal,
    load_cases,
    load_yaml,
    pairs,
    pretty,
    recorded_bytes,
    recorded_request,
    regenerating,
    render_json,
    run_case,
    sse_events,
    strict_equal,
)

CASES = load_cases()

# Every pair has these cases, or says in its pair.yaml (``missing``) why it cannot.
CASE_NAMES = (
    "text",
    "system-sampling",
    "tool-call",
    "tool-result",
    "image",
    "structured-output",
    "reasoning",
    "error",
    "stream-text",
    "stream-tool-call",
    "stream-reasoning",
    "stream-usage",
    "stream-error",
)


def _params(cases: list[Case]) -> list[object]:
    out = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=case.meta["xfail"])] if case.meta.get("xfail") else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def _write(case: Case, name: str, data: bytes) -> None:
    path = case.dir / name
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


@pytest.mark.parametrize("case", _params(CASES))
def test_golden(case: Case) -> None:
    """The client request through the exchange gives the expected upstream request, and the provider answer (cut at
    every split point) gives the expected client output, byte-identical whatever the cuts."""
    result, runs = run_case(case)
    base_label, base = runs[0]
    for label, body in runs[1:]:
        assert body == base, f"{case.id}: provider body cut '{label}' gives other client bytes than '{base_label}'"

    if regenerating():
        if case.meta.get("xfail"):
            pytest.xfail("regen leaves a known-bug case's hand-written expectations alone")
        # Same format both sides: bodies the gateway passes on unchanged are written as they are, so the files show
        # the bytes; everything else is pretty-printed for review (compared semantically either way).
        same = case.client == case.provider
        if result.upstream_body is not None:
            raw_up = same and not case.meta.get("passthrough_request_changed")
            _write(case, UPSTREAM_REQUEST, result.upstream_body if raw_up else render_json(result.upstream_body))
        for name in CLIENT_OUTPUTS:
            if name != result.client_name and (case.dir / name).exists():
                (case.dir / name).unlink()
        raw = result.client_body
        pretty_out = result.client_name == "client_response.json" and not same
        _write(case, result.client_name, render_json(raw) if pretty_out else raw)
        _write(case, WIRE, pretty(result.wire).encode())
        return

    present = [n for n in CLIENT_OUTPUTS if (case.dir / n).exists()]
    assert present == [result.client_name], f"expected client output file {result.client_name}, found {present}"
    assert_json_equal(case.read(WIRE), json.dumps(result.wire).encode(), WIRE)
    if result.upstream_body is None:
        assert case.meta.get("answered_by_gateway"), (
            "the gateway answered the request itself (case.yaml does not say so)"
        )
        assert not (case.dir / UPSTREAM_REQUEST).exists(), "the gateway answered itself: no upstream request"
    else:
        assert_json_equal(case.read(UPSTREAM_REQUEST), result.upstream_body, UPSTREAM_REQUEST)
    assert_output_equal(result.client_name, case.read(result.client_name), result.client_body)
    if case.client == case.provider:
        _check_passthrough(case, result.upstream_body, result.client_body)


def _check_passthrough(case: Case, upstream: bytes | None, client_out: bytes) -> None:
    """Same format both sides: the client's bytes go upstream unchanged except an aliased model's name, and the
    provider's bytes come back unchanged (unless the case says why not)."""
    sent = case.read(CLIENT_REQUEST)
    model = case.meta["config"]["models"][0]
    target = model.get("target_model", model["name"])
    if case.client == "gemini" or target == model["name"]:
        expected = sent  # Gemini names the model in the path
    else:
        pattern = rb'("model"\s*:\s*)"' + re.escape(model["name"].encode()) + rb'"'
        expected, n = re.subn(pattern, lambda m: m.group(1) + json.dumps(target).encode(), sent, count=1)
        assert n == 1, "the aliased model name must appear once in the client request"
    if not case.meta.get("passthrough_request_changed"):
        assert upstream == expected, "pass-through must send the client's bytes, only the model value changed"
    if not case.meta.get("passthrough_response_changed"):
        assert client_out == case.read(case.answer["file"]), "pass-through must return the provider's bytes"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_inputs_come_from_where_case_yaml_says(case: Case) -> None:
    """A recorded provider answer is byte for byte what its recording holds (derived as README.md says); a hand-made
    one says why, and keeps the recorded prefix it claims; a client request taken from a recording is that request."""
    answer = case.answer
    data = case.read(answer["file"])
    if "recorded" in answer:
        assert data == recorded_bytes(answer["recorded"]), f"{answer['file']} is not what its recording holds"
    else:
        made = answer["hand_made"]
        assert made.get("why"), "a hand-made provider answer must say why no recording is used"
        ref = made.get("recorded_prefix")
        if ref:
            prefix = b"".join(sse_events(recorded_bytes(ref))[: ref["events"]])
            assert data.startswith(prefix), "a hand-made stream must start with the recorded events it claims"
    source = case.meta.get("client_request_recorded")
    if source:
        expected = {**recorded_request(source), **(source.get("overrides") or {})}
        assert strict_equal(json.loads(case.read(CLIENT_REQUEST)), expected), "client request is not the recorded one"


def test_every_pair_has_every_case() -> None:
    """9 pairs (and any format added later) x the case list, except the cases a pair documents as impossible."""
    found: dict[str, set[str]] = {}
    for case in CASES:
        found.setdefault(case.pair, set()).add(case.name)
    assert len(pairs()) >= 9
    for pair_dir in pairs():
        missing = load_yaml(pair_dir / "pair.yaml").get("missing") or {}
        have = found.get(pair_dir.name, set())
        assert all(why for why in missing.values()), f"{pair_dir.name}: a missing case needs its reason"
        assert set(CASE_NAMES) - have == set(missing), f"{pair_dir.name}: cases missing without a reason"
