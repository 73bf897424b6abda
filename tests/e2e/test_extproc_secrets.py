"""The extproc hop holds no provider secret: a worker's environment has no provider key, and a peer calling
``ExternalProcessor/Process`` directly (as anything that could reach the service's port would) never gets one back,
whatever it sends, with or without gateway keys configured, for every client format and provider."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from tests.conftest import KEYS, MODELS, Gateway, gateway_config
from tests.unit.test_deploy import running, wait_for

GATEWAY_KEY = "gw-direct-peer-test-key"
SECRETS = [k.encode() for k in KEYS.values()]
PATHS = {
    "openai": "/openai/v1/chat/completions",
    "anthropic": "/anthropic/v1/messages",
    "gemini": "/gemini/v1beta/models/{model}:generateContent",
}


def _body(client: str, model: str) -> bytes:
    if client == "gemini":
        return orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if client == "anthropic":
        body["max_tokens"] = 16
    return orjson.dumps(body)


# Answers a provider of each type might give (the peer plays Envoy and the provider both).
ANSWERS = {
    "openai": b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
    b'"total_tokens":2}}',
    "anthropic": b'{"id":"m","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"ok"}],'
    b'"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}',
    "gemini": b'{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP"}],'
    b'"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}',
}


def _headers(pairs: dict[str, str]) -> pb.HttpHeaders:
    return pb.HttpHeaders(
        headers=HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()])
    )


def _exchange(client: str, provider: str, presented: str | None) -> list[pb.ProcessingRequest]:
    model = MODELS[provider]
    body = _body(client, model)
    h = {":method": "POST", ":path": PATHS[client].format(model=model), "content-length": str(len(body))}
    if presented is not None:
        h["authorization"] = f"Bearer {presented}"
        h["x-api-key"] = presented
        h["x-goog-api-key"] = presented
    return [
        pb.ProcessingRequest(request_headers=_headers(h)),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
        pb.ProcessingRequest(response_headers=_headers({":status": "200", "content-type": "application/json"})),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=ANSWERS[provider], end_of_stream=True)),
    ]


@pytest.fixture(scope="module", params=["no gateway keys", "gateway keys"])
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bool]]:
    """A worker started with every provider key in its environment (the worst a deployment could do): the service
    must still never read or return them."""
    tmp = tmp_path_factory.mktemp("direct")
    keyed = request.param == "gateway keys"
    text = gateway_config(1)
    if keyed:
        text += f'auth:\n  api_keys:\n    - "sha256:{hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()}"\n'
    (tmp / "config.yaml").write_text(text)
    env = dict(os.environ)
    env.update({f"{kind.upper()}_API_KEY": key for kind, key in KEYS.items()})
    env["AI_GATEWAY_TEST_MISSING_KEY"] = "sk-never-returned-either"
    sock = tmp / "extproc.sock"
    cmd = [sys.executable, "-m", "extproc", "extproc", "--config", str(tmp / "config.yaml"), "--env-file", os.devnull]
    cmd += ["--extproc-listen", f"unix:{sock}"]
    with running(cmd, tmp / "worker.log", env) as proc:
        wait_for("worker", sock.exists, [proc], [tmp / "worker.log"])
        yield f"unix:{sock}", keyed


def _call(target: str, messages: list[pb.ProcessingRequest]) -> tuple[list[bytes], grpc.StatusCode | None]:
    answers: list[bytes] = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        try:
            for resp in stub.Process(iter(messages), timeout=10):
                answers.append(resp.SerializeToString())
        except grpc.RpcError as err:
            return answers, err.code()
    return answers, None


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
def test_direct_process_calls_never_return_a_provider_key(worker: tuple[str, bool], client: str, provider: str) -> None:
    target, keyed = worker
    for presented in (None, "wrong-key", GATEWAY_KEY):
        answers, status = _call(target, _exchange(client, provider, presented))
        for raw in answers:
            assert not any(secret in raw for secret in [*SECRETS, b"sk-never-returned-either"]), raw[:300]
        first = pb.ProcessingResponse.FromString(answers[0])
        if keyed and presented != GATEWAY_KEY:
            # 401 at the request headers; the body that follows gets no answer at all: the stream ends with an error.
            assert first.immediate_response.status.code == 401
            assert len(answers) == 1 and status == grpc.StatusCode.FAILED_PRECONDITION
            continue
        assert status is None and len(answers) == 4
        body = pb.ProcessingResponse.FromString(answers[1]).request_body.response
        set_headers = {h.header.key for h in body.header_mutation.set_headers}
        assert {"authorization", "x-api-key", "x-goog-api-key"}.isdisjoint(set_headers)
        assert {"authorization", "x-api-key", "x-goog-api-key"} <= set(body.header_mutation.remove_headers)


def test_garbage_and_out_of_order_messages_end_the_stream_quietly(worker: tuple[str, bool]) -> None:
    target, _ = worker
    empty = pb.ProcessingRequest()
    body_first = pb.ProcessingRequest(request_body=pb.HttpBody(body=b"{}", end_of_stream=True))
    for messages in ([empty], [body_first]):
        answers, status = _call(target, messages)
        assert answers == []
        assert status in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


def _children(parent: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return out


def test_workers_of_the_gateway_hold_no_provider_key(gateway: Gateway) -> None:
    """The launcher hands keys to Envoy only: its workers' environments and command lines carry none."""
    launcher = gateway.proc.pid
    workers = [pid for pid in _children(launcher) if b"extproc" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) >= 1
    for pid in workers:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in SECRETS:
            assert secret not in environ and secret not in cmdline
    launcher_env = Path(f"/proc/{launcher}/environ").read_bytes()
    assert any(secret in launcher_env for secret in SECRETS), "the test gateway was started with the keys"
