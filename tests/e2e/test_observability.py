"""Metrics, logs, access logs, request ids, health while draining, graceful shutdown with a stream, live reload."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import (
    KEYS,
    MODELS,
    ROOT,
    Gateway,
    free_port,
    gateway_config,
    model_count,
    start_gateway,
    stop_gateway,
)
from tests.e2e.sdk import CLIENT_KEY, anthropic_client, ask, stream
from tests.mocks.providers import MockProvider, Received


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def test_metrics_totals_across_workers(gateway: Gateway) -> None:
    """9 non-streaming + 3 streaming + 1 error through 2 workers: every count exact, tokens by type, TTFT."""
    for client in ("openai", "anthropic", "gemini"):
        for _ in range(3):
            ask(client, gateway.url, "metrics-model", "count")
        stream(client, gateway.url, "metrics-model", "count stream")
    with contextlib.suppress(Exception):  # the SDK's RateLimitError; the metrics are what this test checks
        ask("openai", gateway.url, "metrics-model", "ERROR 429")
    # Workers write their sums at most 0.2 s after a request (and the one answering /metrics, at once). A scrape reads
    # the workers' files one after the other (counters, histograms: each worker's own), so one taken while a worker
    # writes may have its requests and not yet its durations: wait for both.
    deadline = time.monotonic() + 3
    text = httpx.get(gateway.url + "/metrics").text
    while time.monotonic() < deadline and (
        metric(text, "proxy_requests_total", model="metrics-model") < 13
        or metric(text, "proxy_request_duration_seconds_count", model="metrics-model") < 13
        or metric(text, "proxy_time_to_first_token_seconds_count", model="metrics-model") < 3
        or metric(text, "proxy_gateway_overhead_seconds_count", provider="anthropic") < 13
    ):
        time.sleep(0.1)
        text = httpx.get(gateway.url + "/metrics").text
    assert metric(text, "proxy_requests_total", model="metrics-model") == 13
    assert metric(text, "proxy_requests_total", model="metrics-model", status="200") == 12
    assert metric(text, "proxy_requests_total", model="metrics-model", status="429", format="openai") == 1
    assert metric(text, "proxy_errors_total", model="metrics-model", error_type="rate_limit") == 1
    assert metric(text, "proxy_request_duration_seconds_count", model="metrics-model") == 13
    # Usage from all 12 answers, pass-through (Anthropic client) included: 11 in, 7 out each.
    assert metric(text, "proxy_tokens_total", model="metrics-model", provider="anthropic", type="input") == 12 * 11
    assert metric(text, "proxy_tokens_total", model="metrics-model", provider="anthropic", type="output") == 12 * 7
    assert metric(text, "proxy_time_to_first_token_seconds_count", model="metrics-model") == 3
    assert metric(text, "proxy_gateway_overhead_seconds_count", provider="anthropic") >= 13
    assert metric(text, "proxy_active_requests", provider="anthropic") == 0


def log_lines(gw: Gateway) -> list[dict]:
    out = []
    for line in gw.log_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


def wait_for_line(gw: Gateway, pred, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in log_lines(gw):
            if pred(rec):
                return rec
        time.sleep(0.1)
    raise AssertionError("no such log line")


def test_request_log_line_and_access_log(gateway: Gateway) -> None:
    rid = "log-check-42"
    r = httpx.post(
        gateway.url + "/openai/v1/chat/completions",
        json={"model": MODELS["gemini"], "messages": [{"role": "user", "content": "log me"}]},
        headers={"x-request-id": rid, "authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert r.status_code == 200
    rec = wait_for_line(gateway, lambda d: d.get("request_id") == rid and "status_code" in d)
    for key in ("timestamp", "level", "message", "duration_ms", "status_code", "format", "model", "provider",
                "streaming"):  # fmt: skip
        assert key in rec, key
    assert (rec["format"], rec["model"], rec["provider"], rec["streaming"]) == ("openai", MODELS["gemini"], "gemini",
                                                                                False)  # fmt: skip
    assert (rec["input_tokens"], rec["output_tokens"]) == (11, 7)
    access = wait_for_line(gateway, lambda d: d.get("request_id") == rid and "upstream" in d)
    assert access["model"] == MODELS["gemini"] and access["provider"] == "gemini"
    assert access["path"] == "/openai/v1/chat/completions"
    assert access["input_tokens"] == 11 and access["status"] == 200


def test_error_log_line_has_error_type(gateway: Gateway) -> None:
    rid = "log-err-7"
    httpx.post(gateway.url + "/anthropic/v1/messages", json={"model": "nope", "max_tokens": 5,
               "messages": [{"role": "user", "content": "x"}]}, headers={"x-request-id": rid})  # fmt: skip
    rec = wait_for_line(gateway, lambda d: d.get("request_id") == rid and "status_code" in d)
    assert rec["status_code"] == 404 and rec["error_type"] == "unknown_model" and rec["level"] == "warn"


def test_no_secret_in_logs_metrics_or_error_bodies(gateway: Gateway) -> None:
    answer = anthropic_client(gateway.url, default_headers={"x-request-id": "secret-0"}).messages.create(
        model=MODELS["openai"], max_tokens=50, messages=[{"role": "user", "content": "secret check"}]
    )
    assert answer.content[0].text.endswith("secret check")  # type: ignore[union-attr]
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}

    def chat(model: str, text: str) -> dict:
        return {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": text}]}

    cases = [
        ("/openai/v1/chat/completions", chat(MODELS["anthropic"], "ERROR 401")),
        ("/anthropic/v1/messages", chat(MODELS["gemini"], "ERROR 403")),
        ("/openai/v1/chat/completions", chat("no-key-model", "x")),
    ]
    rids = ["secret-0"]
    errors = []
    for i, (path, body) in enumerate(cases, start=1):
        rids.append(f"secret-{i}")
        errors.append(httpx.post(gateway.url + path, json=body, headers={**headers, "x-request-id": rids[-1]}))
    # A Gemini client's ?key= on requests the service answers itself (unknown model, listing) and on translated ones.
    gemini_paths = ("/gemini/v1beta/models/nope:generateContent", "/gemini/v1beta/models",
                    f"/gemini/v1beta/models/{MODELS['openai']}:generateContent")  # fmt: skip
    for path in gemini_paths:
        rids.append(f"secret-{len(rids)}")
        url, rid = gateway.url + path + f"?key={CLIENT_KEY}", {"x-request-id": rids[-1]}
        body = {"contents": [{"role": "user", "parts": [{"text": "k"}]}]}
        errors.append(httpx.post(url, json=body, headers=rid) if ":" in path else httpx.get(url, headers=rid))
    assert [r.status_code for r in errors] == [401, 403, 401, 404, 200, 200]
    # Wait until every request has its access-log line (Envoy flushes the access log every 0.5 s) and the service's
    # own log line, so the log searched below holds everything these requests made the gateway write.
    for rid in rids:
        wait_for_line(gateway, lambda d, rid=rid: d.get("request_id") == rid and "upstream" in d)
        wait_for_line(gateway, lambda d, rid=rid: d.get("request_id") == rid and "status_code" in d)
    for text in (gateway.log_text(), httpx.get(gateway.url + "/metrics").text, *(r.text for r in errors)):
        for secret in (*KEYS.values(), CLIENT_KEY):
            assert secret not in text


def streaming_now(mock: MockProvider, text: str, timeout: float = 10.0) -> Received:
    """Wait until ``mock`` has written the first event of the stream whose last user text ends with ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in list(mock.requests):
            if text.encode() in rec.raw and rec.stream_started_at is not None:
                return rec
        time.sleep(0.02)
    raise AssertionError(f"mock {mock.kind} never started streaming {text!r}")


def health_status(gw: Gateway) -> int | str:
    try:
        return httpx.get(gw.url + "/health", timeout=1).status_code
    except httpx.HTTPError:
        return "refused"


def test_more_sigterms_while_stopping_still_exit_0(mocks: dict) -> None:  # type: ignore[type-arg]
    """An orchestrator (or a test's cleanup) may send SIGTERM again while the gateway stops: it stops once and exits
    0, also when a signal lands after the last log line (a TERM that met Python's default handler there was -15)."""
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=1)
        gw.proc.send_signal(signal.SIGTERM)
        sent = 1
        while gw.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                gw.proc.send_signal(signal.SIGTERM)
                sent += 1
            time.sleep(0.002)
        assert sent > 10  # the gateway was signalled all through its shutdown, not only at its start
        assert gw.proc.returncode == 0, gw.log_text()[-3000:]
        assert gw.log_text().count('"message":"stopped"') == 1


def test_a_lone_extproc_worker_signalled_while_stopping_exits_0(tmp_path: Path) -> None:
    """``ai-gateway extproc`` alone (docker compose, meshes): TERM and the launcher's drain signal (USR1) again and
    again through its shutdown; it exits 0 (a late signal after the event loop closed was the default action: -15)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(gateway_config(free_port()))
    log_path = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(PYTHONUNBUFFERED="1", **{f"{k.upper()}_API_KEY": v for k, v in KEYS.items()})
    cmd = [sys.executable, "-m", "extproc", "extproc", "--config", str(cfg), "--env-file", os.devnull,
           "--extproc-listen", f"unix:{tmp_path}/w.sock", "--grace", "1"]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "serving on" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.02)
        sent = 0
        while proc.poll() is None:  # it stops within milliseconds, Python's exit included: short pauses
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM if sent % 2 == 0 else signal.SIGUSR1)
                sent += 1
            time.sleep(0.0003)
        assert sent > 5 and proc.returncode == 0, (sent, log_path.read_text(errors="replace")[-2000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_with_stream_in_flight(mocks: dict) -> None:  # type: ignore[type-arg]
    """SIGTERM mid-stream: /health turns 503 while the stream is still going, the stream finishes whole, the gateway
    exits 0."""
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=1)
        result: dict[str, object] = {}

        def slow() -> None:
            try:
                result["got"] = stream("openai", gw.url, MODELS["anthropic"], "SLOWSTREAM drain")
            except Exception as exc:  # asserted below
                result["error"] = exc

        t = threading.Thread(target=slow)
        t.start()
        rec = streaming_now(mocks["anthropic"], "SLOWSTREAM drain")
        assert health_status(gw) == 200
        gw.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while (first := health_status(gw)) == 200 and time.monotonic() < deadline:  # the signal handler runs
            time.sleep(0.02)
        assert first in (503, "refused")
        assert rec.stream_finished_at is None, "health turned only after the stream had ended: nothing was drained"
        statuses = {first}
        while t.is_alive():  # for as long as the stream lasts, /health never says healthy again
            statuses.add(health_status(gw))
            time.sleep(0.05)
        t.join(30)
        code = stop_gateway(gw)
        assert "error" not in result, result.get("error")
        assert result["got"].text.endswith("SLOWSTREAM drain")  # type: ignore[attr-defined]
        assert 200 not in statuses
        assert code == 0, gw.log_text()[-3000:]


def test_live_reload_adds_model_and_rejects_broken_file(mocks: dict) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        base = gateway_config(free_port())
        gw = start_gateway(Path(tmp), mocks, base, workers=2)
        try:
            models = model_count(base)
            assert httpx.get(gw.url + "/health").json()["models"] == models
            # A new model on an existing provider: picked up from the file change alone.
            gw.config_path.write_text(base + '  - name: "reloaded-model"\n    provider: "gemini"\n')
            deadline = time.monotonic() + 10
            while httpx.get(gw.url + "/health").json()["models"] != models + 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            ans = ask("openai", gw.url, "reloaded-model", "after reload")
            assert ans.text.endswith("after reload")
            # A broken file is rejected; the old config keeps serving.
            gw.config_path.write_text("version: [broken")
            wait_for_line(gw, lambda d: "reload rejected" in d.get("message", ""))
            assert ask("openai", gw.url, "reloaded-model", "still here").text.endswith("still here")
            # A new provider needs a new Envoy cluster: Envoy is hot-restarted; a stream in flight is not dropped.
            oa = mocks["openai"].base_url
            text = base.replace(
                "providers:\n",
                f'providers:\n  - name: "second-openai"\n    type: "openai"\n    base_url: "{oa}"\n'
                f'    api_key_env: "OPENAI_API_KEY"\n',
            )
            text += '  - name: "new-provider-model"\n    provider: "second-openai"\n'
            in_flight: dict[str, object] = {}

            def slow() -> None:
                try:
                    in_flight["got"] = stream("anthropic", gw.url, MODELS["gemini"], "LONGSTREAM across restart")
                except Exception as exc:  # asserted below
                    in_flight["error"] = exc

            t = threading.Thread(target=slow)
            t.start()
            rec = streaming_now(mocks["gemini"], "LONGSTREAM across restart")  # events spread over 8 s
            gw.config_path.write_text(text)
            wait_for_line(gw, lambda d: "hot-restarting" in d.get("message", ""))
            assert rec.stream_finished_at is None, "Envoy was restarted only after the stream had ended"
            deadline = time.monotonic() + 20
            while httpx.get(gw.url + "/health").json()["models"] != 10 and time.monotonic() < deadline:
                time.sleep(0.2)
            deadline = time.monotonic() + 20
            while True:
                try:
                    ans = ask("openai", gw.url, "new-provider-model", "new cluster")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            assert ans.text.endswith("new cluster")
            t.join(30)
            assert "error" not in in_flight, in_flight.get("error")
            assert in_flight["got"].text.endswith("LONGSTREAM across restart")  # type: ignore[attr-defined]
        finally:
            assert stop_gateway(gw) == 0


def test_verbose_adds_debug_lines_with_keys_redacted(mocks: dict) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=1, extra_args=("--verbose",))
        try:
            r = httpx.post(
                gw.url + "/openai/v1/chat/completions",
                json={"model": MODELS["anthropic"], "messages": [{"role": "user", "content": "verbose body"}],
                      "user": "api_key=sk-should-be-redacted"},
                headers={"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "verbose-1"},
            )  # fmt: skip
            assert r.status_code == 200
            rec = wait_for_line(gw, lambda d: d.get("level") == "debug" and "verbose body" in d.get("message", ""))
            assert "verbose-1" in rec["message"]
            wait_for_line(gw, lambda d: d.get("request_id") == "verbose-1" and "status_code" in d)
        finally:
            stop_gateway(gw)
        text = gw.log_text()
        assert "sk-should-be-redacted" not in text
        for secret in (*KEYS.values(), CLIENT_KEY):
            assert secret not in text
