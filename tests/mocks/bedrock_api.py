"""The AWS Bedrock runtime mock: Converse / ConverseStream, Claude's InvokeModel / InvokeModelWithResponseStream and
CountTokens, behind AWS SigV4.

    POST /model/{modelId}/converse | /converse-stream | /invoke | /invoke-with-response-stream | /count-tokens

Every request's SigV4 signature is verified with botocore against the mock's credentials (service ``bedrock``, the
mock's region): no ``Authorization`` is 403 "Missing Authentication Token", another access key 403 "The security
token included in the request is invalid.", a signature that does not match (a wrong secret, a body changed after
signing, an unsigned body hash) 403 "The request signature we calculated does not match ...", a date more than 5
minutes off 403 "Signature expired". Then the model (unknown: 400 "The provided model identifier is invalid.") and the
body: Converse against botocore's own service model of ``bedrock-runtime`` (``ConverseRequest``, unknown fields and
wrong types refused as the real service does) plus the rules the model does not state (roles alternate and start
with the user, tool results answer the previous turn's tool uses); Claude's InvokeModel body as the Anthropic mock
checks it, with ``anthropic_version: bedrock-2023-05-31`` and neither ``model`` nor ``stream``.

Streams are AWS event streams (binary frames with CRCs, written here by ``frame``), written in pieces cut at random
offsets (seeded per request), so that frames arrive split anywhere. Magic words of tests/mocks/providers.py work;
``STREAMERROR`` ends the stream with a ``throttlingException`` frame.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import random
import re
import struct
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from botocore.validate import ParamValidator

from tests.mocks.anthropic_api import AnthropicApi
from tests.mocks.embeddings import tokens, vector
from tests.mocks.server import USAGE_IN, USAGE_OUT, Answer, ApiError, Conv, MockServer, ProviderApi, Received, dumps

_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)$")
_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details."
)
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use", "refusal": "content_filtered",
         "stop_sequence": "stop_sequence"}  # fmt: skip


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and headers length, CRC), string headers, payload, CRC."""
    hb = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(hb) + len(payload) + 4, len(hb))
    msg = prelude + struct.pack(">I", binascii.crc32(prelude)) + hb + payload
    return msg + struct.pack(">I", binascii.crc32(msg))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, dumps(payload))


def exception(kind: str, message: str) -> bytes:
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                 dumps({"message": message}))  # fmt: skip


def _denied(message: str) -> ApiError:
    return ApiError(403, message, etype="AccessDeniedException")


class SigV4Verifier:
    """Checks an AWS SigV4 ``Authorization`` the way AWS does, recomputing the signature with botocore."""

    def __init__(self, access_key: str, secret_key: str, token: str | None, region: str, service: str = "bedrock"):
        self.creds = Credentials(access_key, secret_key, token)
        self.region, self.service = region, service

    def verify(self, method: str, path: str, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
        auth = headers.get("authorization")
        if not auth:
            raise _denied("Missing Authentication Token")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            raise _denied("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.")
        try:
            fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
            access_key, date, region, service, terminal = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            signature = fields["Signature"]
        except (KeyError, ValueError):
            raise _denied("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'.") from None
        if access_key != self.creds.access_key:
            raise _denied("The security token included in the request is invalid.")
        if (region, service, terminal) != (self.region, self.service, "aws4_request"):
            raise _denied(f"Credential should be scoped to a valid region and service {self.service}.")
        if self.creds.token is not None and headers.get("x-amz-security-token") != self.creds.token:
            raise _denied("The security token included in the request is invalid.")
        for name in ("host", "x-amz-date", "x-amz-content-sha256"):
            if name not in signed:
                raise _denied(SIGNATURE_MISMATCH)
        if headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
            raise _denied(SIGNATURE_MISMATCH)  # the body is not the one signed
        amz_date = headers.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise _denied(SIGNATURE_MISMATCH) from None
        now = time.time() if now is None else now
        if abs(now - when) > 300 or not amz_date.startswith(date):
            raise _denied(f"Signature expired: {amz_date} is now earlier than the allowed window (5 min.)")
        values = {h: headers.get(h, "") for h in signed}

        class Exact(SigV4Auth):
            def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
                out = HTTPHeaders()
                for h in signed:
                    out[h] = values[h]
                return out

        req = AWSRequest(method=method, url=f"http://{headers.get('host', '')}{path}", data=body, headers=values)
        req.context["timestamp"] = amz_date
        auth4 = Exact(self.creds, self.service, self.region)
        expected = auth4.signature(auth4.string_to_sign(req, auth4.canonical_request(req)), req)
        if expected != signature:
            raise _denied(SIGNATURE_MISMATCH)


def _texts(blocks: list[dict[str, Any]]) -> str:
    return " ".join(b["text"] for b in blocks if isinstance(b.get("text"), str))


def _check_converse(body: dict[str, Any], model: str, stream: bool) -> Conv:
    """The request against botocore's ConverseRequest shape, then the rules it does not state."""
    shape = _MODEL.operation_model("ConverseStream" if stream else "Converse").input_shape
    report = ParamValidator().validate({"modelId": model, **body}, shape)
    if report.has_errors():
        raise ApiError(400, report.generate_report().replace("\n", " "), etype="ValidationException")
    msgs = body["messages"]
    if not msgs or msgs[0]["role"] != "user":
        raise ApiError(400, "A conversation must start with a user message. Try again with a conversation that "
                       "starts with a user message.", etype="ValidationException")  # fmt: skip
    for a, b in itertools.pairwise(msgs):
        if a["role"] == b["role"]:
            raise ApiError(400, "A conversation must alternate between user and assistant roles. Make sure the "
                           "conversation alternates between user and assistant roles and try again.",
                           etype="ValidationException")  # fmt: skip
    tool_use_ids: set[str] = set()
    for i, m in enumerate(msgs):
        if not m["content"]:
            raise ApiError(400, f"messages.{i}.content: must not be empty", etype="ValidationException")
        ids = {b["toolUse"]["toolUseId"] for b in m["content"] if "toolUse" in b}
        results = {b["toolResult"]["toolUseId"] for b in m["content"] if "toolResult" in b}
        if results - tool_use_ids:
            raise ApiError(400, "The number of toolResult blocks at messages.{i}.content exceeds the number of "
                           "toolUse blocks of previous turn.", etype="ValidationException")  # fmt: skip
        if (ids or results) and "toolConfig" not in body:
            raise ApiError(400, "The toolConfig field must be defined when using toolUse and toolResult content "
                           "blocks.", etype="ValidationException")  # fmt: skip
        for b in m["content"]:
            if "image" in b:
                base64.b64decode(b["image"]["source"]["bytes"], validate=True)
        tool_use_ids = ids
    last = msgs[-1]
    conv = Conv(model=model, stream=stream, last_user_text=_texts(last["content"]))
    results = [b["toolResult"] for b in last["content"] if "toolResult" in b]
    if results:
        conv.tool_results = [_texts(r["content"]) or json.dumps(r["content"]) for r in results]
    tools = body.get("toolConfig", {}).get("tools", [])
    conv.tool_names = [t["toolSpec"]["name"] for t in tools]
    choice = body.get("toolConfig", {}).get("toolChoice", {})
    if "tool" in choice:
        conv.forced_tool = choice["tool"]["name"]
    inference = body.get("inferenceConfig", {})
    conv.stop_sequences = inference.get("stopSequences", [])
    fmt = body.get("outputConfig", {}).get("textFormat")
    if fmt is not None:
        try:
            conv.json_schema = json.loads(fmt["structure"]["jsonSchema"]["schema"])
        except (KeyError, ValueError):
            raise ApiError(
                400, "outputConfig.textFormat: the schema is not valid JSON", etype="ValidationException"
            ) from None
        conv.json = True
    thinking = body.get("additionalModelRequestFields", {}).get("thinking")
    if isinstance(thinking, dict):
        if "claude" not in model:
            raise ApiError(400, "The model returned the following errors: thinking: Extra inputs are not permitted",
                           etype="ValidationException")  # fmt: skip
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024 or budget >= inference.get("maxTokens", 4096):
            raise ApiError(400, "The model returned the following errors: thinking.budget_tokens must be >= 1024 and "
                           "less than max_tokens", etype="ValidationException")  # fmt: skip
        if "temperature" in inference or "topP" in inference:
            raise ApiError(400, "The model returned the following errors: temperature may only be set to 1 when "
                           "thinking is enabled.", etype="ValidationException")  # fmt: skip
        conv.thinking = True
    return conv


_COHERE_TYPES = ("search_document", "search_query", "classification", "clustering")


def _check_embed(body: dict[str, Any], model: str, op: str) -> Conv:
    """Titan Text Embeddings (``inputText``, ``dimensions``, ``normalize``) or Cohere Embed (``texts``,
    ``input_type``, ``embedding_types``, ``output_dimension``) through InvokeModel."""
    if op != "invoke":
        raise ApiError(400, "The model is unsupported for streaming.", etype="ValidationException")
    if model.startswith("amazon.titan-embed"):
        if set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
            raise ApiError(400, f"Malformed input request: extraneous key [{sorted(set(body) - {'inputText'})[0]}] "
                           "is not permitted", etype="ValidationException")  # fmt: skip
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            raise ApiError(
                400, "Malformed input request: #/inputText: expected minLength: 1", etype="ValidationException"
            )
        dims = body.get("dimensions")
        if dims is not None and dims not in (256, 512, 1024):
            raise ApiError(400, "Malformed input request: #/dimensions: 7 is not a valid enum value",
                           etype="ValidationException")  # fmt: skip
        conv = Conv(model=model, stream=False, last_user_text=text)
        conv.embed = {"texts": [text], "dims": dims, "kind": "titan"}
        return conv
    if set(body) - {"texts", "input_type", "embedding_types", "truncate", "output_dimension", "images"}:
        raise ApiError(400, "Malformed input request: extraneous key", etype="ValidationException")
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ApiError(400, "Malformed input request: #/texts: expected type: JSONArray", etype="ValidationException")
    if body.get("input_type") not in _COHERE_TYPES:
        raise ApiError(400, "Malformed input request: #/input_type: required key [input_type] not found",
                       etype="ValidationException")  # fmt: skip
    conv = Conv(model=model, stream=False, last_user_text=" ".join(texts))
    conv.embed = {"texts": texts, "dims": body.get("output_dimension"), "kind": "cohere",
                  "by_type": "embedding_types" in body, "input_type": body["input_type"]}  # fmt: skip
    return conv


class BedrockApi(ProviderApi):
    kind = "bedrock"
    stream_content_type = "application/vnd.amazon.eventstream"
    stop_sequence_finish = True

    def __init__(self, verifier: SigV4Verifier, models: tuple[str, ...]) -> None:
        self.verifier = verifier
        self.models = models
        self._anthropic = AnthropicApi()

    def route(self, method: str, path: str) -> str:
        m = _PATH.match(path)
        if method != "POST" or m is None:
            raise ApiError(404, "Not Found", etype="UnknownOperationException")
        return path

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        pass  # SigV4 needs the body: checked by BedrockMock before anything else

    def bad_json(self) -> ApiError:
        return ApiError(400, "Malformed input request, please reformat your input and try again.",
                        etype="ValidationException")  # fmt: skip

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        m = _PATH.match(endpoint)
        assert m is not None
        model, op = unquote(m.group(1)), m.group(2)
        if model not in self.models:
            raise ApiError(400, "The provided model identifier is invalid.", etype="ValidationException")
        if op == "count-tokens":
            given = body.get("input", {})
            if set(given) not in ({"converse"}, {"invokeModel"}):
                raise ApiError(400, "input: exactly one of converse, invokeModel", etype="ValidationException")
            return Conv(model=model, stream=False, count_tokens=True)
        if op.startswith("converse"):
            return _check_converse(body, model, op == "converse-stream")
        if "embed" in model:
            return _check_embed(body, model, op)
        if "claude" not in model:
            raise ApiError(400, "this mock serves InvokeModel for Claude models only", etype="ValidationException")
        if body.get("anthropic_version") != "bedrock-2023-05-31":
            raise ApiError(400, "anthropic_version: Input should be 'bedrock-2023-05-31'", etype="ValidationException")
        for key in ("model", "stream"):
            if key in body:
                raise ApiError(400, f"Malformed input request: #: extraneous key [{key}] is not permitted, please "
                               "reformat your input and try again.", etype="ValidationException")  # fmt: skip
        stream = op == "invoke-with-response-stream"
        rest = {k: v for k, v in body.items() if k != "anthropic_version"}
        conv = self._anthropic.validate("messages", {"model": model, **rest, **({"stream": True} if stream else {})},
                                        query, rec)  # fmt: skip
        conv.stream = stream
        return conv

    def error_body(self, e: ApiError, seq: int) -> dict:
        return {"message": e.message}

    def magic_error(self, status: int, model: str) -> ApiError:
        headers = {"retry-after": "7"} if status == 429 else {}
        msgs = {
            400: ("Invalid request (mock ERROR 400).", "ValidationException"),
            403: ("You don't have access to the model with the specified model ID.", "AccessDeniedException"),
            429: ("Too many requests, please wait before trying again.", "ThrottlingException"),
            500: ("The server encountered an internal error while processing the request.", "InternalServerException"),
            503: ("Bedrock is unable to process your request.", "ServiceUnavailableException"),
        }
        msg, etype = msgs.get(status, (f"mock error {status}", "InternalServerException"))
        return ApiError(status, msg, etype=etype, headers=headers)

    def id_headers(self, seq: int) -> dict[str, str]:
        return {"x-amzn-requestid": f"mock-{seq:06d}"}

    def count_tokens_body(self) -> dict:
        return {"inputTokens": 5}

    def embed_body(self, conv: Conv) -> dict:
        e = conv.embed
        if e["kind"] == "titan":
            return {"embedding": vector(e["texts"][0], e["dims"]), "inputTextTokenCount": tokens(e["texts"])}
        vecs = [vector(t, e["dims"]) for t in e["texts"]]
        if e["by_type"]:
            return {
                "id": "mock",
                "embeddings": {"float": vecs},
                "texts": e["texts"],
                "response_type": "embeddings_by_type",
            }
        return {"id": "mock", "embeddings": vecs, "texts": e["texts"], "response_type": "embeddings_floats"}

    # ---- answers
    @staticmethod
    def _converse_blocks(conv: Conv, ans: Answer) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if ans.thinking:
            blocks.append({"reasoningContent": {"reasoningText": {"text": "Let me think about this.",
                                                                  "signature": "bedrock-sig-1"}}})  # fmt: skip
        if ans.text is not None:
            blocks.append({"text": ans.text})
        for i, (name, args) in enumerate(ans.calls):
            blocks.append({"toolUse": {"toolUseId": f"tooluse_mock{i + 1}", "name": name, "input": args}})
        return blocks

    def full(self, conv: Conv, ans: Answer, seq: int) -> dict:
        if not self._invoke(conv):
            return {
                "output": {"message": {"role": "assistant", "content": self._converse_blocks(conv, ans)}},
                "stopReason": _STOP.get(ans.finish, "end_turn"),
                "usage": {"inputTokens": USAGE_IN, "outputTokens": USAGE_OUT, "totalTokens": USAGE_IN + USAGE_OUT},
                "metrics": {"latencyMs": 1},
            }
        return self._anthropic.full(conv, ans, seq)

    @staticmethod
    def _invoke(conv: Conv) -> bool:
        return getattr(conv, "_invoke", False)

    def events(self, conv: Conv, ans: Answer, seq: int) -> list[bytes]:
        if self._invoke(conv):
            out = []
            sse = self._anthropic.events(conv, ans, seq)
            for i, ev in enumerate(sse):
                data = json.loads(ev.split(b"data: ", 1)[1])
                if i == len(sse) - 1:
                    data["amazon-bedrock-invocationMetrics"] = {"inputTokenCount": USAGE_IN,
                                                                "outputTokenCount": USAGE_OUT}  # fmt: skip
                out.append(event("chunk", {"bytes": base64.b64encode(dumps(data)).decode(), "p": "abcd"}))
            return out
        frames = [event("messageStart", {"role": "assistant", "p": "abc"})]
        index = 0
        if ans.thinking:
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {
                "text": "Let me think about this."}}}))  # fmt: skip
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {
                "signature": "bedrock-sig-1"}}}))  # fmt: skip
            frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
            index = 1
        if ans.text is not None:
            for piece in [ans.text[i : i + 7] for i in range(0, len(ans.text), 7)] or [""]:
                frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}))
            frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        for i, (name, args) in enumerate(ans.calls):
            start = {"toolUse": {"toolUseId": f"tooluse_mock{i + 1}", "name": name}}
            frames.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            text = json.dumps(args)
            for j in range(0, len(text), 5):
                delta = {"toolUse": {"input": text[j : j + 5]}}
                frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        frames.append(event("messageStop", {"stopReason": _STOP.get(ans.finish, "end_turn")}))
        usage = {"inputTokens": USAGE_IN, "outputTokens": USAGE_OUT, "totalTokens": USAGE_IN + USAGE_OUT}
        frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
        return frames

    def stream_error_event(self) -> bytes:
        return exception("throttlingException", "Too many tokens, please wait before trying again.")

    def first_text_event(self, events: list[bytes]) -> int:
        return min(2, len(events) - 1)


class _Splitting:
    """A request handler whose stream writes go out cut at random offsets (seeded by the request): each frame
    arrives in pieces, as a network may deliver it."""

    def __init__(self, h: Any, seq: int) -> None:
        self._h = h
        self._rng = random.Random(seq)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._h, name)

    def write_chunk(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            n = self._rng.randint(1, 40)
            self._h.write_chunk(data[i : i + n])
            i += n


class BedrockMock(MockServer):
    """The Bedrock mock server: SigV4 is verified over the raw body before anything else is looked at."""

    api: BedrockApi

    def _validate(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: dict | None,
        rec: Received,
    ) -> Conv:  # fmt: skip
        self.api.route(method, path)
        self.api.verifier.verify(method, rec.path, headers, rec.raw)
        conv = super()._validate(method, path, query, headers, body, rec)
        if path.endswith(("/invoke", "/invoke-with-response-stream")):
            conv._invoke = True  # type: ignore[attr-defined]
        return conv

    def _answer(self, h: Any, rec: Received, conv: Conv, seq: int) -> None:
        super()._answer(_Splitting(h, seq), rec, conv, seq)
