"""Google Vertex AI mocks: Gemini (``publishers/google``) and Claude (``publishers/anthropic``) on a project's paths.

    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent | :streamGenerateContent
         | :countTokens
    POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict | :streamRawPredict
    POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/count-tokens:rawPredict

Checked as Vertex does: the project and location (another: 403 PERMISSION_DENIED), the publisher model (unknown: 404
NOT_FOUND), the credential (an OAuth2 access token issued and unexpired by the mock token endpoint, ``token_ok``;
anything else, an API key included: 401 UNAUTHENTICATED), then the body exactly as the Gemini and Anthropic mocks
check theirs. Claude's body must carry ``anthropic_version: vertex-2023-10-16`` and no ``model`` (the path names it;
count-tokens names it in the body), and ``stream: true`` exactly on ``streamRawPredict``. Errors from Vertex itself
(authentication, quota, unknown models) are Google's envelope; Claude's own errors are Anthropic's. The magic words
of tests/mocks/providers.py work (Claude's ``ERROR 429`` is Vertex's quota error, in Google's envelope).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.mocks.anthropic_api import AnthropicApi
from tests.mocks.embeddings import GEMINI_TASKS, tokens, vector
from tests.mocks.gemini_api import GeminiApi
from tests.mocks.server import ApiError, Conv, Received, reject_foreign_credentials

_GOOGLE = re.compile(
    r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):"
    r"(generateContent|streamGenerateContent|countTokens|predict)$"
)
_ANTHROPIC = re.compile(
    r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$"
)
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def _google_error(status: int, message: str, code: str) -> ApiError:
    return ApiError(status, message, etype=code, code="google")


def _check_auth(headers: dict[str, str], query: dict[str, list[str]], token_ok: Callable[[str], bool]) -> None:
    if "x-goog-api-key" in headers or "key" in query or "x-api-key" in headers or "api-key" in headers:
        raise _google_error(401, UNAUTHENTICATED, "UNAUTHENTICATED")
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not token_ok(auth[7:]):
        raise _google_error(401, UNAUTHENTICATED, "UNAUTHENTICATED")


def _check_place(m: re.Match[str], project: str, location: str, publisher: str, models: tuple[str, ...]) -> str:
    if (m.group(1), m.group(2)) != (project, location):
        raise _google_error(
            403,
            f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/"
            f"{m.group(1)}/locations/{m.group(2)}/publishers/{publisher}/models/{m.group(3)}' (or it may not exist).",
            "PERMISSION_DENIED",
        )
    model = m.group(3)
    if model not in models:
        raise _google_error(
            404,
            f"Publisher Model `projects/{project}/locations/{location}/publishers/{publisher}/models/{model}` not "
            "found.",
            "NOT_FOUND",
        )
    return model


_QUOTA = (
    "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model "
    "with base model: {model}. Please submit a quota increase request."
)


def _embed_predict(model: str, body: dict) -> Conv:
    """Vertex's text embeddings: ``{"instances": [{"content", "task_type", "title"}], "parameters"}``."""
    if not model.startswith(("text-embedding", "gemini-embedding", "text-multilingual-embedding")):
        raise _google_error(400, f"{model} does not support predict for embeddings", "FAILED_PRECONDITION")
    instances = body.get("instances")
    if set(body) - {"instances", "parameters"} or not isinstance(instances, list) or not instances:
        raise _google_error(400, "Invalid JSON payload received: 'instances' is required.", "INVALID_ARGUMENT")
    texts = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict) or set(inst) - {"content", "task_type", "title"} or not inst.get("content"):
            raise _google_error(400, f"instances[{i}]: content is required", "INVALID_ARGUMENT")
        if inst.get("task_type") is not None and inst["task_type"] not in GEMINI_TASKS:
            raise _google_error(400, f"instances[{i}].task_type is not valid", "INVALID_ARGUMENT")
        texts.append(inst["content"])
    params = body.get("parameters") or {}
    if set(params) - {"outputDimensionality", "autoTruncate"}:
        raise _google_error(400, "Invalid JSON payload received: unknown parameter", "INVALID_ARGUMENT")
    conv = Conv(model=model, stream=False, last_user_text=" ".join(texts))
    conv.embed = {
        "texts": texts,
        "dims": params.get("outputDimensionality"),
        "tasks": [i.get("task_type") for i in instances],
    }
    return conv


class VertexGeminiApi(GeminiApi):
    kind = "vertex"

    def __init__(self, project: str, location: str, models: tuple[str, ...], token_ok: Callable[[str], bool]) -> None:
        self.project, self.location, self.models, self.token_ok = project, location, models, token_ok

    def route(self, method: str, path: str) -> str:
        if method != "POST" or not _GOOGLE.match(path):
            raise _google_error(404, f"Method not found: {method} {path}", "NOT_FOUND")
        return path

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        _check_auth(headers, query, self.token_ok)

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        m = _GOOGLE.match(endpoint)
        assert m is not None
        model = _check_place(m, self.project, self.location, "google", self.models)
        action = m.group(4)
        if action == "predict":
            return _embed_predict(model, body)
        if action == "countTokens":
            extra = set(body) - {"contents", "systemInstruction", "tools", "generationConfig"}
            if extra or not isinstance(body.get("contents"), list):
                raise _google_error(
                    400, f"Invalid JSON payload received. Unknown name {sorted(extra)}", "INVALID_ARGUMENT"
                )
            return Conv(model=model, stream=False, count_tokens=True)
        for i, content in enumerate(body.get("contents") or []):
            if isinstance(content, dict) and content.get("role") not in ("user", "model"):
                raise _google_error(400, f"Please use a valid role: user, model. (contents[{i}])", "INVALID_ARGUMENT")
        return super().validate(f"/v1/models/{model}:{action}", body, query, rec)

    def error_body(self, e: ApiError, seq: int) -> dict:
        return super().error_body(ApiError(e.status, e.message, etype=e.etype, details=e.details), seq)

    def embed_body(self, conv: Conv) -> dict:
        e = conv.embed
        preds = [
            {
                "embeddings": {
                    "values": vector(t, e["dims"]),
                    "statistics": {"token_count": tokens([t]), "truncated": False},
                }
            }
            for t in e["texts"]
        ]
        return {"predictions": preds, "metadata": {"billableCharacterCount": sum(len(t) for t in e["texts"])}}

    def magic_error(self, status: int, model: str) -> ApiError:
        if status == 429:
            return ApiError(429, _QUOTA.format(model=model), etype="RESOURCE_EXHAUSTED", headers={"retry-after": "7"})
        return super().magic_error(status, model)


class VertexAnthropicApi(AnthropicApi):
    kind = "vertex-claude"

    def __init__(self, project: str, location: str, models: tuple[str, ...], token_ok: Callable[[str], bool]) -> None:
        self.project, self.location, self.models, self.token_ok = project, location, models, token_ok

    def route(self, method: str, path: str) -> str:
        m = _ANTHROPIC.match(path)
        if method != "POST" or m is None:
            raise _google_error(404, f"Method not found: {method} {path}", "NOT_FOUND")
        return path

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        reject_foreign_credentials(headers, ("x-api-key",), {})
        _check_auth(headers, query, self.token_ok)

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        m = _ANTHROPIC.match(endpoint)
        assert m is not None
        counting = m.group(3) == "count-tokens"
        if not counting:
            _check_place(m, self.project, self.location, "anthropic", self.models)
        version = body.get("anthropic_version")
        if version != "vertex-2023-10-16":
            raise ApiError(400, "anthropic_version: Input should be 'vertex-2023-10-16'", etype="invalid_request_error")
        rest = {k: v for k, v in body.items() if k != "anthropic_version"}
        if counting:
            if m.group(4) != "rawPredict" or not isinstance(rest.get("model"), str):
                raise ApiError(400, "model: Field required", etype="invalid_request_error")
            if rest["model"] not in self.models:
                raise _google_error(404, f"Publisher Model `{rest['model']}` not found.", "NOT_FOUND")
            return super().validate("count_tokens", rest, query, rec)
        if "model" in rest:
            raise ApiError(400, "model: Extra inputs are not permitted", etype="invalid_request_error")
        if (rest.get("stream") is True) != (m.group(4) == "streamRawPredict"):
            raise ApiError(400, "stream must be true exactly on streamRawPredict", etype="invalid_request_error")
        return super().validate("messages", {"model": m.group(3), **rest}, query, rec)

    def error_body(self, e: ApiError, seq: int) -> dict:
        if e.code == "google":
            return {"error": {"code": e.status, "message": e.message, "status": e.etype}}
        return super().error_body(e, seq)

    def magic_error(self, status: int, model: str) -> ApiError:
        if status == 429:
            err = _google_error(429, _QUOTA.format(model=f"anthropic-{model}"), "RESOURCE_EXHAUSTED")
            err.headers = {"retry-after": "7"}
            return err
        return super().magic_error(status, model)
