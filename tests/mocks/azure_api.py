"""The Azure OpenAI mock: Chat Completions on a resource's deployment URLs and on the ``/openai/v1/`` surface.

    POST /openai/deployments/{deployment}/chat/completions?api-version=...   (the deployment is the model)
    POST /openai/v1/chat/completions                                          (the model in the body is the deployment)

Checked as Azure does: the ``api-version`` query (missing: 404 "Resource not found"; unknown: 400 "API version not
supported"), the deployment (unknown: 404 ``DeploymentNotFound``), the credential (``api-key``, or an Entra ID
``Authorization: Bearer`` token accepted by ``token_ok``; else Azure's 401), then the body exactly as the OpenAI mock
checks it (hand-written checks and the official SDK's request types). Answers carry Azure's content-filter reports
(``prompt_filter_results``, per-choice ``content_filter_results``; a stream starts with a chunk that has only the
prompt filter report, as Azure's do). Magic words of tests/mocks/providers.py work; and:

    CONTENTFILTER   the prompt is refused by the input filter: 400 ``content_filter`` with ``innererror``
    REFUSE          the output filter stops the answer: ``finish_reason: content_filter``
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.mocks.embeddings import OpenAIEmbedApi
from tests.mocks.openai_api import OpenAIApi
from tests.mocks.server import Answer, ApiError, Conv, Received, dumps, flag, reject_foreign_credentials

API_VERSIONS = ("2024-06-01", "2024-10-21", "2025-04-01-preview")  # what the mock accepts (GA and a preview)
_DEPLOYMENTS = "/openai/deployments/"
_V1 = "/openai/v1/chat/completions"
_SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            "hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]  # fmt: skip
CHOICE_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
FILTERED_CHOICE = {**CHOICE_FILTER, "violence": {"filtered": True, "severity": "high"}}
DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)


class AzureApi(OpenAIApi):
    kind = "azure"

    def __init__(
        self,
        deployments: tuple[str, ...],
        token_ok: Callable[[str], bool] | None = None,
        embeddings: tuple[str, ...] = (),
    ) -> None:
        self.deployments = deployments
        self.token_ok = token_ok  # Entra ID tokens accepted (None: api-key only)
        self.embeddings = OpenAIEmbedApi(embeddings)  # embedding deployments, checked as OpenAI's embeddings

    def base_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def route(self, method: str, path: str) -> str:
        if method == "POST" and path == _V1:
            return "v1"
        if method == "POST" and path.startswith(_DEPLOYMENTS) and path.endswith("/chat/completions"):
            deployment = path[len(_DEPLOYMENTS) : -len("/chat/completions")]
            if deployment and "/" not in deployment:
                return "deployment:" + deployment
        if method == "POST" and path.startswith(_DEPLOYMENTS) and path.endswith("/embeddings"):
            deployment = path[len(_DEPLOYMENTS) : -len("/embeddings")]
            if deployment and "/" not in deployment:
                return "embeddings:" + deployment
        raise ApiError(404, "Resource not found", code="404")

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        reject_foreign_credentials(headers, ("x-api-key", "x-goog-api-key"), {})
        if "key" in query:
            raise ApiError(400, "foreign credential header key (query parameter)")
        key, auth = headers.get("api-key"), headers.get("authorization")
        if key is not None and auth is not None:
            raise ApiError(400, "both api-key and Authorization sent")
        if key is not None:
            if key != api_key:
                raise ApiError(401, DENIED, code="401")
            return
        if auth is not None and self.token_ok is not None:
            token = auth.removeprefix("Bearer ")
            if not auth.startswith("Bearer ") or not self.token_ok(token):
                raise _entra_denied()
            return
        raise ApiError(401, DENIED, code="401")

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        if endpoint.startswith("embeddings:"):
            self._check_version(query)
            deployment = endpoint.split(":", 1)[1]
            if deployment not in self.embeddings.embed_models:
                raise _no_deployment()
            return self.embeddings.validate("embeddings", {**body, "model": deployment}, query, rec)
        if endpoint.startswith("deployment:"):
            self._check_version(query)
            deployment = endpoint.split(":", 1)[1]
        else:
            deployment = body.get("model") if isinstance(body.get("model"), str) else ""
        if deployment not in self.deployments:
            raise _no_deployment()
        conv = super().validate(endpoint, body, query, rec)
        if flag(conv.last_user_text, "CONTENTFILTER"):
            raise _content_filtered()
        conv.model = deployment
        return conv

    @staticmethod
    def _check_version(query: dict[str, list[str]]) -> None:
        version = (query.get("api-version") or [None])[0]
        if version is None:
            raise ApiError(404, "Resource not found", code="404")
        if version not in API_VERSIONS:
            raise ApiError(400, "API version not supported", code="BadRequest")

    def embed_body(self, conv: Conv) -> dict:
        return self.embeddings.embed_body(conv)

    def error_body(self, e: ApiError, seq: int) -> dict:
        if e.etype == "entra":
            return {"statusCode": 401, "message": e.message}
        err: dict[str, Any] = {"code": e.code or str(e.status), "message": e.message}
        if e.param is not None:
            err["param"] = e.param
        if e.code == "content_filter":
            err.update(param="prompt", status=400, innererror={
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {**CHOICE_FILTER, "violence": {"filtered": True, "severity": "medium"}},
            })  # fmt: skip
        return {"error": err}

    def magic_error(self, status: int, model: str) -> ApiError:
        headers = {"retry-after": "7"} if status == 429 else {}
        msgs = {
            400: "Invalid request (mock ERROR 400).",
            429: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
            "exceeded token rate limit of your current AIServices S0 pricing tier. Please retry after 7 seconds.",
            500: "The server had an error while processing your request. Sorry about that!",
            503: "The service is temporarily unable to process your request. Please try again later.",
        }
        return ApiError(status, msgs.get(status, f"mock error {status}"), code=str(status), headers=headers)

    def id_headers(self, seq: int) -> dict[str, str]:
        return {"apim-request-id": f"mock-{seq:06d}", "x-ms-region": "Sweden Central"}

    def full(self, conv: Conv, ans: Answer, seq: int) -> dict:
        out = super().full(conv, ans, seq)
        out["prompt_filter_results"] = PROMPT_FILTER
        for choice in out["choices"]:
            choice["content_filter_results"] = FILTERED_CHOICE if ans.finish == "refusal" else CHOICE_FILTER
            if ans.finish == "refusal":
                choice["message"]["content"] = None
        out.pop("service_tier", None)
        return out

    def events(self, conv: Conv, ans: Answer, seq: int) -> list[bytes]:
        if ans.finish == "refusal":
            ans = Answer("I can", [], "refusal")
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER,
        }
        return [b"data: " + dumps(first) + b"\n\n", *super().events(conv, ans, seq)]


def _no_deployment() -> ApiError:
    return ApiError(
        404,
        "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
        "please wait a moment and try again.",
        code="DeploymentNotFound",
    )


def _entra_denied() -> ApiError:
    return ApiError(
        401,
        "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
        "or have expired.",
        etype="entra",
    )


def _content_filtered() -> ApiError:
    return ApiError(
        400,
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please "
        "modify your prompt and retry. To learn more about our content filtering policies please read our "
        "documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        code="content_filter",
    )
