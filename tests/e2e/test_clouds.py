"""The clouds' provider types through the real Envoy with the official SDKs: every client format x Azure OpenAI,
Vertex AI (Gemini and Claude) and AWS Bedrock (Converse and Claude), text, streams, tools, images, structured output
and each cloud's own errors in the client's shape; the credentials (api-key, Entra ID and Google tokens minted by
the launcher's refresher, AWS SigV4 by Envoy) checked by strict mocks."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google.genai import errors as gerrors

from tests.conftest import CLIENT_KEY, Gateway, start_gateway, stop_gateway
from tests.e2e.sdk import FINISH, ask, stream, tool_round_trip
from tests.e2e.test_fidelity import PNG, _image_request, _structured
from tests.mocks.azure_api import AzureApi
from tests.mocks.bedrock_api import BedrockApi, BedrockMock, SigV4Verifier
from tests.mocks.embeddings import GeminiEmbedApi, OpenAIEmbedApi
from tests.mocks.oauth import MockOAuth
from tests.mocks.providers import MockProvider
from tests.mocks.server import Fault, MockServer
from tests.mocks.vertex_api import VertexAnthropicApi, VertexGeminiApi

CLIENTS = ("openai", "anthropic", "gemini")
AZURE_KEY = "azure-test-key-0123456789"
DEPLOYMENT = "gpt-4o-prod"
PROJECT = "mock-project"
VERTEX_GEMINI = "gemini-2.5-flash"
VERTEX_CLAUDE = "claude-sonnet-4-5@20250929"
AWS = ("AKIDMOCKGATEWAY01", "mock/secret+access/key0123456789abcdefGHIJ", "mock-session-token")
NOVA = "amazon.nova-pro-v1:0"
CONVERSE_CLAUDE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
INVOKE_CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
EMBED_TARGETS = {
    "emb-openai": "text-embedding-3-small",
    "emb-gemini": "gemini-embedding-001",
    "emb-azure": "text-embedding-3-small-prod",
    "emb-vertex": "text-embedding-005",
    "emb-titan": "amazon.titan-embed-text-v2:0",
    "emb-cohere": "cohere.embed-english-v3",
}
EMBED_KEYS = {"OAE_KEY": "sk-embed-openai-key", "GME_KEY": "AIza-embed-gemini-key"}


@dataclass
class Cloud:
    """A model name of the test config, the mock that serves it, and the mock's answer prefix."""

    model: str
    mock: MockServer
    kind: str  # what the mock calls itself in its answers


@dataclass
class Clouds:
    gw: Gateway
    oauth: MockOAuth
    azure: MockServer
    vertex: MockServer
    vertex_claude: MockServer
    bedrock: BedrockMock
    models: dict[str, Cloud]
    embed_mocks: dict[str, MockServer]


def _config(
    azure: MockServer, vertex: MockServer, vertex_claude: MockServer, sa_file: Path, bedrock: BedrockMock,
    oa_embed: MockServer, gm_embed: MockServer,
) -> str:  # fmt: skip
    embed_models = "".join(
        f'  - {{name: "{name}", provider: "{provider}", target_model: "{EMBED_TARGETS[name]}"}}\n'
        for name, provider in (("emb-openai", "oa-embed"), ("emb-gemini", "gm-embed"), ("emb-azure", "azure"),
                               ("emb-vertex", "vertex"), ("emb-titan", "bedrock"), ("emb-cohere", "bedrock"))
    )  # fmt: skip
    return f"""
version: "1.0"
timeout: "6s"
providers:
  - {{name: "oa-embed", type: "openai", base_url: "{oa_embed.base_url}", api_key_env: "OAE_KEY"}}
  - {{name: "gm-embed", type: "gemini", base_url: "{gm_embed.base_url}", api_key_env: "GME_KEY"}}
  - name: "bedrock"
    type: "bedrock"
    region: "us-east-1"
    base_url: "{bedrock.base_url}"
  - name: "bedrock-claude"
    type: "bedrock"
    api: "anthropic"
    region: "us-east-1"
    base_url: "{bedrock.base_url}"
  - name: "bedrock-wrong-key"
    type: "bedrock"
    region: "us-east-1"
    base_url: "{bedrock.base_url}"
    aws_profile: "wrong"
  - name: "vertex"
    type: "vertex"
    project: "{PROJECT}"
    location: "us-central1"
    base_url: "{vertex.base_url}"
    credentials_file: "{sa_file}"
  - name: "vertex-claude"
    type: "vertex"
    api: "anthropic"
    project: "{PROJECT}"
    location: "us-east5"
    base_url: "{vertex_claude.base_url}"
    credentials_file: "{sa_file}"
  - name: "azure"
    type: "azure"
    base_url: "{azure.base_url}"
    api_key_env: "AZURE_OPENAI_API_KEY"
    api_version: "2024-10-21"
  - name: "azure-v1"
    type: "azure"
    base_url: "{azure.base_url}"
    api_key_env: "AZURE_OPENAI_API_KEY"
    api_version: "v1"
  - name: "azure-entra"
    type: "azure"
    base_url: "{azure.base_url}"
    credentials: "entra"
  - name: "azure-old"
    type: "azure"
    base_url: "{azure.base_url}"
    api_key_env: "AZURE_OPENAI_API_KEY"
    api_version: "2023-03-15-preview"
models:
{embed_models}  - name: "bedrock-nova"
    provider: "bedrock"
    target_model: "{NOVA}"
  - name: "bedrock-converse-claude"
    provider: "bedrock"
    target_model: "{CONVERSE_CLAUDE}"
  - name: "bedrock-claude"
    provider: "bedrock-claude"
    target_model: "{INVOKE_CLAUDE}"
  - name: "bedrock-missing"
    provider: "bedrock"
    target_model: "amazon.nothing-v1:0"
  - name: "bedrock-wrong-key"
    provider: "bedrock-wrong-key"
    target_model: "{NOVA}"
  - name: "vertex-gemini"
    provider: "vertex"
    target_model: "{VERTEX_GEMINI}"
  - name: "vertex-claude"
    provider: "vertex-claude"
    target_model: "{VERTEX_CLAUDE}"
  - name: "vertex-missing"
    provider: "vertex"
    target_model: "gemini-0.1-nothing"
  - name: "azure-gpt"
    provider: "azure"
    target_model: "{DEPLOYMENT}"
  - name: "azure-v1-gpt"
    provider: "azure-v1"
    target_model: "{DEPLOYMENT}"
  - name: "azure-entra-gpt"
    provider: "azure-entra"
    target_model: "{DEPLOYMENT}"
  - name: "azure-missing"
    provider: "azure"
    target_model: "no-such-deployment"
  - name: "azure-old-gpt"
    provider: "azure-old"
    target_model: "{DEPLOYMENT}"
  - name: "fb-bedrock-azure"
    targets: [{{provider: "bedrock", model: "{NOVA}"}}, {{provider: "azure", model: "{DEPLOYMENT}"}}]
  - name: "fb-azure-vertex"
    targets: [{{provider: "azure", model: "{DEPLOYMENT}"}}, {{provider: "vertex", model: "{VERTEX_GEMINI}"}}]
  - name: "fb-vertex-bedrock"
    targets:
      - {{provider: "vertex", model: "{VERTEX_GEMINI}"}}
      - {{provider: "bedrock-claude", model: "{INVOKE_CLAUDE}"}}
fallback:
  cooldown: {{failures: 1000}}  # every test fails its primary on purpose: none may be ejected
"""


@pytest.fixture(scope="module")
def clouds(mocks: dict[str, MockProvider]) -> Iterator[Clouds]:
    oauth = MockOAuth().start()
    azure = MockServer(AzureApi((DEPLOYMENT,), oauth.valid, (EMBED_TARGETS["emb-azure"],)), AZURE_KEY).start()
    oa_embed = MockServer(OpenAIEmbedApi((EMBED_TARGETS["emb-openai"],)), EMBED_KEYS["OAE_KEY"]).start()
    gm_embed = MockServer(GeminiEmbedApi((EMBED_TARGETS["emb-gemini"],)), EMBED_KEYS["GME_KEY"]).start()
    vertex_models = (VERTEX_GEMINI, EMBED_TARGETS["emb-vertex"])
    vertex = MockServer(VertexGeminiApi(PROJECT, "us-central1", vertex_models, oauth.valid), "").start()
    vertex_claude = MockServer(VertexAnthropicApi(PROJECT, "us-east5", (VERTEX_CLAUDE,), oauth.valid), "").start()
    verifier = SigV4Verifier(*AWS, region="us-east-1")
    bedrock_models = (NOVA, CONVERSE_CLAUDE, INVOKE_CLAUDE, EMBED_TARGETS["emb-titan"], EMBED_TARGETS["emb-cohere"])
    bedrock = BedrockMock(BedrockApi(verifier, bedrock_models), "").start()
    tenant, client_id, secret = oauth.entra_client
    env = {
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
        "AZURE_AUTHORITY_HOST": oauth.url,
        "AZURE_TENANT_ID": tenant,
        "AZURE_CLIENT_ID": client_id,
        "AZURE_CLIENT_SECRET": secret,
        # Envoy's signer reads the standard AWS chain; nothing of this machine's own AWS setup may leak in.
        "AWS_ACCESS_KEY_ID": AWS[0],
        "AWS_SECRET_ACCESS_KEY": AWS[1],
        "AWS_SESSION_TOKEN": AWS[2],
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PROFILE": None,
        **EMBED_KEYS,
    }
    with tempfile.TemporaryDirectory(prefix="ai-gateway-clouds-") as tmp:
        sa_file = Path(tmp) / "service-account.json"
        sa_file.write_text(json.dumps(oauth.service_account(PROJECT)))
        aws_files = Path(tmp) / "aws"
        aws_files.mkdir()
        (aws_files / "credentials").write_text(
            f"[wrong]\naws_access_key_id = {AWS[0]}\naws_secret_access_key = not-the-secret-key\n"
            f"aws_session_token = {AWS[2]}\n"
        )
        (aws_files / "config").write_text("")
        env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(aws_files / "credentials"), AWS_CONFIG_FILE=str(aws_files / "config")
        )
        config = _config(azure, vertex, vertex_claude, sa_file, bedrock, oa_embed, gm_embed)
        gw = start_gateway(Path(tmp), mocks, config, workers=1, extra_env=env)
        models = {
            "azure": Cloud("azure-gpt", azure, "azure"),
            "azure-v1": Cloud("azure-v1-gpt", azure, "azure"),
            "azure-entra": Cloud("azure-entra-gpt", azure, "azure"),
            "vertex": Cloud("vertex-gemini", vertex, "vertex"),
            "vertex-claude": Cloud("vertex-claude", vertex_claude, "vertex-claude"),
            "bedrock": Cloud("bedrock-nova", bedrock, "bedrock"),
            "bedrock-converse-claude": Cloud("bedrock-converse-claude", bedrock, "bedrock"),
            "bedrock-claude": Cloud("bedrock-claude", bedrock, "bedrock"),
        }
        try:
            embed_mocks = {"emb-openai": oa_embed, "emb-gemini": gm_embed, "emb-azure": azure, "emb-vertex": vertex,
                           "emb-titan": bedrock, "emb-cohere": bedrock}  # fmt: skip
            yield Clouds(gw, oauth, azure, vertex, vertex_claude, bedrock, models, embed_mocks)
        finally:
            stop_gateway(gw)
            for m in (azure, vertex, vertex_claude, bedrock, oa_embed, gm_embed):
                m.stop()
            oauth.stop()


CLOUDS = (
    "azure", "azure-v1", "azure-entra", "vertex", "vertex-claude", "bedrock", "bedrock-converse-claude",
    "bedrock-claude",
)  # fmt: skip
PAIRS = [(c, p) for c in CLIENTS for p in CLOUDS]


def _assert_azure_request(cl: Clouds, cloud: str) -> None:
    got = cl.azure.last()
    path, _, query = got.path.partition("?")
    if cloud == "azure-v1":
        assert path == "/openai/v1/chat/completions" and query == ""
        assert got.body is not None and got.body["model"] == DEPLOYMENT
    else:
        assert path == f"/openai/deployments/{DEPLOYMENT}/chat/completions" and query == "api-version=2024-10-21"
    if cloud == "azure-entra":
        token = got.headers["authorization"].removeprefix("Bearer ")
        assert cl.oauth.valid(token) and "api-key" not in got.headers
    else:
        assert got.headers["api-key"] == AZURE_KEY and "authorization" not in got.headers
    for name, value in got.headers.items():
        assert CLIENT_KEY not in value, f"client credential leaked upstream in {name}"


def _assert_vertex_request(cl: Clouds, cloud: str, *, stream: bool) -> None:
    mock = cl.vertex if cloud == "vertex" else cl.vertex_claude
    got = mock.last()
    token = got.headers["authorization"].removeprefix("Bearer ")
    assert cl.oauth.valid(token)
    assert not {"x-goog-api-key", "x-api-key", "api-key"} & set(got.headers)
    if cloud == "vertex":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        want = f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models/{VERTEX_GEMINI}:{method}"
        assert got.path.endswith(want.split("?")[0] + ("?alt=sse" if stream else "")) or got.path == want
    else:
        method = "streamRawPredict" if stream else "rawPredict"
        assert (
            got.path
            == f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/{VERTEX_CLAUDE}:{method}"
        )
        assert got.body is not None and got.body["anthropic_version"] == "vertex-2023-10-16" and "model" not in got.body
    for name, value in got.headers.items():
        assert CLIENT_KEY not in value, f"client credential leaked upstream in {name}"


def _assert_bedrock_request(cl: Clouds, cloud: str, *, stream: bool) -> None:
    """Signed by Envoy with the chain's credentials (the mock verified the signature over the body it got)."""
    got = cl.bedrock.last()
    assert got.status == 200
    assert got.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS[0]}/")
    assert got.headers["x-amz-security-token"] == AWS[2]
    model = {"bedrock": NOVA, "bedrock-converse-claude": CONVERSE_CLAUDE, "bedrock-claude": INVOKE_CLAUDE}[cloud]
    if cloud == "bedrock-claude":
        op = "invoke-with-response-stream" if stream else "invoke"
    else:
        op = "converse-stream" if stream else "converse"
    assert got.path == f"/model/{model.replace(':', '%3A')}/{op}"
    for name, value in got.headers.items():
        assert CLIENT_KEY not in value, f"client credential leaked upstream in {name}"


@pytest.mark.parametrize(("client", "cloud"), PAIRS)
def test_text(clouds: Clouds, client: str, cloud: str) -> None:
    c = clouds.models[cloud]
    ans = ask(client, clouds.gw.url, c.model, "hi there", system="You are terse.", temperature=0.5, max_tokens=100)
    assert ans.text == f"Hello from mock {c.kind}. You said: hi there"
    assert ans.finish == FINISH[client]["stop"]
    assert (ans.input_tokens, ans.output_tokens) == (11, 7)
    if cloud.startswith("azure"):
        _assert_azure_request(clouds, cloud)
    elif cloud.startswith("vertex"):
        _assert_vertex_request(clouds, cloud, stream=False)
    else:
        _assert_bedrock_request(clouds, cloud, stream=False)


@pytest.mark.parametrize(("client", "cloud"), PAIRS)
def test_stream(clouds: Clouds, client: str, cloud: str) -> None:
    c = clouds.models[cloud]
    got = stream(client, clouds.gw.url, c.model, "stream please")
    assert got.text == f"Hello from mock {c.kind}. You said: stream please"
    assert got.finish == FINISH[client]["stop"]
    assert (got.input_tokens, got.output_tokens) == (11, 7)
    if cloud.startswith("azure"):
        _assert_azure_request(clouds, cloud)
    elif cloud.startswith("vertex"):
        _assert_vertex_request(clouds, cloud, stream=True)
    else:
        _assert_bedrock_request(clouds, cloud, stream=True)


@pytest.mark.parametrize(("client", "cloud"), PAIRS)
def test_streamed_tool_call(clouds: Clouds, client: str, cloud: str) -> None:
    got = stream(client, clouds.gw.url, clouds.models[cloud].model, "weather PARALLEL", tools=True)
    assert got.tool_calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert got.finish == FINISH[client]["tool_calls"]


@pytest.mark.parametrize(("client", "cloud"), PAIRS)
def test_tool_round_trip(clouds: Clouds, client: str, cloud: str) -> None:
    first, second = tool_round_trip(client, clouds.gw.url, clouds.models[cloud].model, parallel=True)
    assert first.tool_calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert first.finish == FINISH[client]["tool_calls"]
    assert "sunny in Paris" in second.text and "sunny in Tokyo" in second.text


@pytest.mark.parametrize(("client", "cloud"), PAIRS)
def test_image(clouds: Clouds, client: str, cloud: str) -> None:
    c = clouds.models[cloud]
    assert "describe" in _image_request(client, clouds.gw.url, c.model, {"media_type": "image/png", "data": PNG})
    body = c.mock.last().body
    assert body is not None
    assert json.dumps(body).count(PNG) == 1


@pytest.mark.parametrize(("client", "cloud"), PAIRS)
def test_structured_output(clouds: Clouds, client: str, cloud: str) -> None:
    assert json.loads(_structured(client, clouds.gw.url, clouds.models[cloud].model)) == {"city": "mock", "temp": 1}


# ------------------------------------------------------------------------------------------------------ errors
def _error(client: str, url: str, model: str, text: str) -> tuple[int, str]:
    """(status, message) of the error the client's SDK raises."""
    try:
        ask(client, url, model, text)
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        return exc.status_code, str(exc)
    except gerrors.APIError as exc:
        return exc.code, str(exc)
    raise AssertionError("no error")


_SDK_ERRORS: dict[str, dict[int, Any]] = {
    "openai": {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
               429: openai.RateLimitError},
    "anthropic": {400: anthropic.BadRequestError, 401: anthropic.AuthenticationError, 404: anthropic.NotFoundError,
                  429: anthropic.RateLimitError},
}  # fmt: skip


@pytest.mark.parametrize("client", CLIENTS)
def test_azure_errors(clouds: Clouds, client: str) -> None:
    url = clouds.gw.url
    status, msg = _error(client, url, "azure-gpt", "CONTENTFILTER please")
    assert status == 400 and "content management policy" in msg and "violence (medium)" in msg
    status, msg = _error(client, url, "azure-missing", "hi")
    assert status == 404 and "deployment for this resource does not exist" in msg
    status, msg = _error(client, url, "azure-old-gpt", "hi")
    assert status == 400 and "API version not supported" in msg
    status, msg = _error(client, url, "azure-gpt", "ERROR 429")
    assert status == 429 and "exceeded token rate limit" in msg
    if client in _SDK_ERRORS:  # the SDK's own exception class for the status
        with pytest.raises(_SDK_ERRORS[client][429]):
            ask(client, url, "azure-entra-gpt", "ERROR 429")


@pytest.mark.parametrize("client", CLIENTS)
def test_azure_output_filter_is_content_filter(clouds: Clouds, client: str) -> None:
    ans = ask(client, clouds.gw.url, "azure-gpt", "REFUSE this")
    want = {"openai": "content_filter", "anthropic": "refusal", "gemini": "SAFETY"}[client]
    assert ans.finish == want
    got = stream(client, clouds.gw.url, "azure-gpt", "REFUSE this")
    assert got.finish == want


def test_entra_token_is_minted_by_the_launcher(clouds: Clouds) -> None:
    """The Entra ID token comes from the token endpoint through the launcher's refresher (client credentials), and
    the service's workers never held the client secret."""
    assert any(r["grant_type"] == "client_credentials" for r in clouds.oauth.requests)
    ask("openai", clouds.gw.url, "azure-entra-gpt", "hi")
    token = clouds.azure.last().headers["authorization"].removeprefix("Bearer ")
    assert clouds.oauth.valid(token)
    assert "mock-client-secret" not in clouds.gw.log_text() and token not in clouds.gw.log_text()


@pytest.mark.parametrize("client", CLIENTS)
def test_vertex_errors(clouds: Clouds, client: str) -> None:
    url = clouds.gw.url
    status, msg = _error(client, url, "vertex-missing", "hi")
    assert status == 404 and "Publisher Model" in msg
    status, msg = _error(client, url, "vertex-gemini", "ERROR 429")
    assert status == 429 and "Quota exceeded" in msg
    status, msg = _error(client, url, "vertex-claude", "ERROR 429")  # Vertex's own envelope, from Claude's route
    assert status == 429 and "Quota exceeded" in msg
    status, msg = _error(client, url, "vertex-claude", "ERROR 400")  # Claude's own envelope
    assert status == 400
    if client in _SDK_ERRORS:
        with pytest.raises(_SDK_ERRORS[client][429]):
            ask(client, url, "vertex-claude", "ERROR 429")


def test_google_token_is_minted_by_the_launcher(clouds: Clouds) -> None:
    """Vertex's token comes from the service account's JWT exchanged at its token_uri by the launcher's refresher;
    no log line holds it or the private key."""
    assert any(r["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" for r in clouds.oauth.requests)
    ask("gemini", clouds.gw.url, "vertex-gemini", "hi")
    token = clouds.vertex.last().headers["authorization"].removeprefix("Bearer ")
    log = clouds.gw.log_text()
    assert token not in log and "PRIVATE KEY" not in log


def test_vertex_token_refresh_expiry_and_failing_refresh(mocks: dict[str, MockProvider], tmp_path: Path) -> None:
    """Tokens living 2 s: requests keep working across several tokens (refreshed off the request path, handed to
    Envoy without a restart); when the token endpoint starts refusing, the gateway answers the client's auth error
    saying the token refresh failed once the last token expired (never the provider's own 401); when it works
    again, so do requests."""
    import time

    oauth = MockOAuth(lifetime=2).start()
    vertex = MockServer(VertexGeminiApi(PROJECT, "us-central1", (VERTEX_GEMINI,), oauth.valid), "").start()
    sa_file = tmp_path / "sa.json"
    sa_file.write_text(json.dumps(oauth.service_account(PROJECT)))
    config = f"""
version: "1.0"
timeout: "6s"
providers:
  - {{name: "vertex", type: "vertex", project: "{PROJECT}", location: "us-central1", base_url: "{vertex.base_url}",
     credentials_file: "{sa_file}"}}
models:
  - {{name: "vertex-gemini", provider: "vertex", target_model: "{VERTEX_GEMINI}"}}
"""
    gw = start_gateway(tmp_path, mocks, config, workers=1)
    try:
        tokens_used: set[str] = set()
        deadline = time.monotonic() + 15
        while len(tokens_used) < 3 and time.monotonic() < deadline:  # three tokens, one after the other
            assert ask("openai", gw.url, "vertex-gemini", "hi").text.endswith("hi")
            tokens_used.add(vertex.last().headers["authorization"])
        assert len(tokens_used) >= 3

        oauth.failing = True
        deadline = time.monotonic() + 15
        status, msg = 200, ""
        while time.monotonic() < deadline:
            try:
                ask("openai", gw.url, "vertex-gemini", "hi")
            except openai.AuthenticationError as exc:
                status, msg = exc.status_code, str(exc)
                break
            time.sleep(0.1)
        assert status == 401 and "refreshing its google token failed" in msg
        assert vertex.last().status == 200, "the expired token never reached the provider"
        assert "token refresh failed" in gw.log_text()

        oauth.failing = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                assert ask("gemini", gw.url, "vertex-gemini", "back").text.endswith("back")
                break
            except gerrors.APIError:
                time.sleep(0.2)
        else:
            raise AssertionError("requests did not recover after the token endpoint did")
    finally:
        stop_gateway(gw)
        vertex.stop()
        oauth.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_bedrock_errors(clouds: Clouds, client: str) -> None:
    url = clouds.gw.url
    status, msg = _error(client, url, "bedrock-missing", "hi")
    assert status == 404 and "model identifier is invalid" in msg
    status, msg = _error(client, url, "bedrock-nova", "ERROR 429")
    assert status == 429 and "Too many requests" in msg
    status, msg = _error(client, url, "bedrock-claude", "ERROR 400")
    assert status == 400 and "mock ERROR 400" in msg
    # Envoy signed with the profile's wrong secret: the mock refused the signature; the client gets an auth error.
    status, msg = _error(client, url, "bedrock-wrong-key", "hi")
    assert status == 401 and "signature we calculated does not match" in msg
    assert clouds.bedrock.last().status == 403
    if client in _SDK_ERRORS:
        with pytest.raises(_SDK_ERRORS[client][429]):
            ask(client, url, "bedrock-converse-claude", "ERROR 429")


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("cloud", ["bedrock", "bedrock-claude"])
def test_bedrock_stream_error_frame(clouds: Clouds, client: str, cloud: str) -> None:
    """An exception frame in the event stream ends the client's stream with its own in-stream error."""
    with pytest.raises(Exception) as info:
        got = stream(client, clouds.gw.url, clouds.models[cloud].model, "STREAMERROR please")
        if client == "gemini" and not got.finish:
            raise RuntimeError("stream ended without a finish")
    assert "Too many tokens" in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------------------------ embeddings
EMBEDDERS = tuple(EMBED_TARGETS)


@pytest.mark.parametrize("model", EMBEDDERS)
def test_openai_sdk_embeddings(clouds: Clouds, model: str) -> None:
    """The OpenAI SDK (which asks for base64 and decodes it itself) to every embeddings-capable provider: the
    vectors are exactly the provider's, in input order; dimensions reach it; usage comes back where it reports it."""
    from tests.e2e.sdk import openai_client
    from tests.mocks.embeddings import tokens, vector

    texts = ["hello world"] if model == "emb-titan" else ["hello world", "a second text", "third"]
    dims = 256 if model == "emb-titan" else 4
    got = openai_client(clouds.gw.url).embeddings.create(model=model, input=texts, dimensions=dims)
    assert [d.embedding for d in got.data] == [vector(t, dims) for t in texts]
    assert [d.index for d in got.data] == list(range(len(texts)))
    # the same format passes the provider's answer through (its model name); a translated one names the client's
    assert got.model == (EMBED_TARGETS[model] if model == "emb-openai" else model)
    if model in ("emb-openai", "emb-azure", "emb-vertex", "emb-titan"):
        assert got.usage.prompt_tokens == tokens(texts)
    sent = clouds.embed_mocks[model].last()
    assert sent.status == 200
    if model == "emb-azure":
        assert sent.path == f"/openai/deployments/{EMBED_TARGETS[model]}/embeddings?api-version=2024-10-21"
        assert sent.body is not None and sent.body["dimensions"] == 4
    elif model == "emb-vertex":
        assert sent.path.endswith(f"/publishers/google/models/{EMBED_TARGETS[model]}:predict")
    elif model in ("emb-titan", "emb-cohere"):
        assert sent.path == f"/model/{EMBED_TARGETS[model].replace(':', '%3A')}/invoke"
        assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


@pytest.mark.parametrize("model", EMBEDDERS)
def test_genai_sdk_embeddings(clouds: Clouds, model: str) -> None:
    """google-genai's embed_content (batchEmbedContents) to every embeddings-capable provider, task type, title and
    output dimensionality carried where the provider has them."""
    from google.genai import types as gtypes

    from tests.e2e.sdk import gemini_client
    from tests.mocks.embeddings import vector

    texts = ["hello world"] if model == "emb-titan" else ["hello world", "a second text"]
    dims = 512 if model == "emb-titan" else 4
    cfg = gtypes.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", title="Doc", output_dimensionality=dims)
    cl = gemini_client(clouds.gw.url)  # held: the client closes its connections when collected
    contents = [gtypes.Content(parts=[gtypes.Part(text=text)]) for text in texts]  # one embedding each
    got = cl.models.embed_content(model=model, contents=contents, config=cfg)
    assert [e.values for e in got.embeddings or []] == [vector(t, dims) for t in texts]
    sent = clouds.embed_mocks[model].last()
    assert sent.body is not None
    if model == "emb-gemini":  # the same format: the client's request as it was written
        assert sent.path.endswith(f"/models/{EMBED_TARGETS[model]}:batchEmbedContents")
        assert sent.body["requests"][0]["title"] == "Doc"
    elif model == "emb-vertex":
        assert sent.body["instances"][0] == {
            "content": "hello world",
            "task_type": "RETRIEVAL_DOCUMENT",
            "title": "Doc",
        }
    elif model == "emb-cohere":
        assert sent.body["input_type"] == "search_document"
    elif model in ("emb-openai", "emb-azure"):
        assert sent.body["dimensions"] == 4 and sent.body["encoding_format"] == "float"


def test_embeddings_float_encoding_and_errors(clouds: Clouds) -> None:
    import httpx

    from tests.mocks.embeddings import vector

    url = f"{clouds.gw.url}/openai/v1/embeddings"
    r = httpx.post(url, json={"model": "emb-cohere", "input": "plain floats", "encoding_format": "float"})
    assert r.status_code == 200 and r.json()["data"][0]["embedding"] == vector("plain floats")
    r = httpx.post(url, json={"model": "emb-titan", "input": ["one", "two"]})
    assert r.status_code == 400 and "one text per request" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "vertex-claude", "input": "x"})
    assert r.status_code == 400 and "no embeddings endpoint" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "emb-azure", "input": [1, 2, 3]})
    assert r.status_code == 400 and "token-id inputs" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "emb-openai", "input": [[1, 2, 3]]})  # same format: passed through as it is
    assert r.status_code == 400 and "'$.input' is invalid" in r.json()["error"]["message"]  # the mock's own words
    g = f"{clouds.gw.url}/gemini/v1beta/models/emb-vertex:embedContent"
    r = httpx.post(g, json={"content": {"parts": [{"text": "single"}]}, "outputDimensionality": 3})
    assert r.status_code == 200 and r.json() == {"embedding": {"values": vector("single", 3)}}


# ------------------------------------------------------------------------------------------- the Responses API client
@pytest.mark.parametrize("cloud", CLOUDS)
def test_responses_client(clouds: Clouds, cloud: str) -> None:
    """The OpenAI SDK's Responses API (a 4th client format) to every cloud: an answer, a stream, a tool call."""
    from tests.e2e.sdk import WEATHER_TOOL, openai_client

    c = clouds.models[cloud]
    cl = openai_client(clouds.gw.url)
    r = cl.responses.create(model=c.model, input="hi there", instructions="Be terse.", store=False)
    assert r.output_text == f"Hello from mock {c.kind}. You said: hi there"
    assert r.status == "completed" and r.usage is not None and r.usage.input_tokens == 11
    text, done = "", None
    with cl.responses.stream(model=c.model, input="stream please", store=False) as s:
        for ev in s:
            if ev.type == "response.output_text.delta":
                text += ev.delta
            elif ev.type == "response.completed":
                done = ev.response
    assert text == f"Hello from mock {c.kind}. You said: stream please" and done is not None
    tool = {"type": "function", "name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"],
            "parameters": WEATHER_TOOL["parameters"]}  # fmt: skip
    r = cl.responses.create(model=c.model, input="weather?", tools=[tool], store=False)  # type: ignore[list-item]
    calls = [o for o in r.output if o.type == "function_call"]
    assert [(x.name, json.loads(x.arguments)) for x in calls] == [("get_weather", {"city": "Paris"})]


def test_workers_hold_no_cloud_secret(clouds: Clouds) -> None:
    """The clouds' secrets (the Azure key, the Entra client secret, the AWS secret key and session token) and the
    tokens the refresher minted never reach a worker: not its environment, not its command line; Envoy (the
    launcher's child) has the AWS chain, which it signs with."""
    from tests.e2e.test_extproc_secrets import _children

    ask("openai", clouds.gw.url, "vertex-gemini", "hi")
    token = clouds.vertex.last().headers["authorization"].removeprefix("Bearer ").encode()
    secrets = [AZURE_KEY.encode(), b"mock-client-secret", AWS[1].encode(), AWS[2].encode(), token]
    launcher = clouds.gw.proc.pid
    children = _children(launcher)
    workers = [pid for pid in children if b"extproc" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert workers
    for pid in workers:
        seen = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in secrets:
            assert secret not in seen
    envoys = [pid for pid in children if b"envoy" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]]
    assert any(AWS[1].encode() in Path(f"/proc/{pid}/environ").read_bytes() for pid in envoys)


# ------------------------------------------------------------------------------------------------- token counting
@pytest.mark.parametrize("cloud", ["vertex", "vertex-claude", "bedrock-converse-claude", "bedrock-claude"])
@pytest.mark.parametrize("client", ["anthropic", "gemini"])
def test_count_tokens(clouds: Clouds, client: str, cloud: str) -> None:
    """Token counting reaches each cloud's own counting endpoint (Vertex countTokens and count-tokens:rawPredict,
    Bedrock CountTokens) from the Anthropic and Gemini clients."""
    from tests.e2e.sdk import anthropic_client, gemini_client

    model = clouds.models[cloud].model
    if client == "anthropic":
        n = (
            anthropic_client(clouds.gw.url)
            .messages.count_tokens(model=model, messages=[{"role": "user", "content": "count me"}])
            .input_tokens
        )
    else:
        cl = gemini_client(clouds.gw.url)
        n = cl.models.count_tokens(model=model, contents="count me").total_tokens
    assert n == 5
    sent = clouds.models[cloud].mock.last()
    want = {"vertex": ":countTokens", "vertex-claude": "/count-tokens:rawPredict"}.get(cloud, "/count-tokens")
    assert sent.path.endswith(want) and sent.status == 200


@pytest.mark.parametrize("cloud", ["bedrock-converse-claude", "bedrock-claude", "vertex-claude"])
def test_claude_thinking_signature_round_trip(clouds: Clouds, cloud: str) -> None:
    """Claude's signed reasoning on the clouds: asked for by an Anthropic client, answered with its signature, and
    replayed unchanged on the next turn of a tool loop (Converse's reasoningContent; Anthropic's envelope elsewhere)."""
    from tests.e2e.sdk import WEATHER_TOOL, anthropic_client

    c = clouds.models[cloud]
    cl = anthropic_client(clouds.gw.url)
    tool = {"name": WEATHER_TOOL["name"], "description": WEATHER_TOOL["description"],
            "input_schema": WEATHER_TOOL["parameters"]}  # fmt: skip
    thinking = {"type": "enabled", "budget_tokens": 2048}
    first = cl.messages.create(model=c.model, max_tokens=4096, thinking=thinking, tools=[tool],  # type: ignore[arg-type]
                               messages=[{"role": "user", "content": "weather in Paris?"}])  # fmt: skip
    blocks = {b.type: b for b in first.content}
    assert "thinking" in blocks and blocks["thinking"].signature and "tool_use" in blocks  # type: ignore[union-attr]
    signature = blocks["thinking"].signature  # type: ignore[union-attr]
    call = blocks["tool_use"]
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},  # type: ignore[union-attr]
    ]
    second = cl.messages.create(model=c.model, max_tokens=4096, thinking=thinking, tools=[tool],  # type: ignore[arg-type]
                                messages=history)  # type: ignore[arg-type]  # fmt: skip
    assert "sunny" in "".join(b.text for b in second.content if b.type == "text")
    sent = c.mock.last().body
    assert sent is not None
    if cloud == "bedrock-converse-claude":
        replayed = [b["reasoningContent"]["reasoningText"] for m in sent["messages"] for b in m["content"]
                    if "reasoningContent" in b]  # fmt: skip
        assert replayed and replayed[0]["signature"] == signature
        assert sent["additionalModelRequestFields"]["thinking"] == thinking
    else:
        replayed = [b for m in sent["messages"] if isinstance(m["content"], list) for b in m["content"]
                    if b.get("type") == "thinking"]  # fmt: skip
        assert replayed and replayed[0]["signature"] == signature


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("cloud", ["bedrock", "bedrock-claude", "vertex", "azure"])
def test_stream_cut_midway(clouds: Clouds, client: str, cloud: str) -> None:
    """A cloud that drops the connection mid-stream (a Bedrock event stream cut inside a frame included): the client's
    SDK raises, or at least never sees the stream finish."""
    try:
        got = stream(client, clouds.gw.url, clouds.models[cloud].model, "DROPSTREAM please")
    except AssertionError:
        raise
    except Exception:  # each SDK raises its own (a broken stream, an in-stream error event)
        return
    assert not got.finish, f"a cut stream ended cleanly: {got}"


# ------------------------------------------------------------------------------------------- fallback across clouds
FALLBACKS = {  # a model with two cloud targets -> (its primary, the cloud that answers when the primary fails)
    "fb-bedrock-azure": ("bedrock", "azure"),
    "fb-azure-vertex": ("azure", "vertex"),
    "fb-vertex-bedrock": ("vertex", "bedrock-claude"),
}


def _assert_cloud_request(cl: Clouds, cloud: str, *, stream: bool) -> None:
    if cloud.startswith("azure"):
        _assert_azure_request(cl, cloud)
    elif cloud.startswith("vertex"):
        _assert_vertex_request(cl, cloud, stream=stream)
    else:
        _assert_bedrock_request(cl, cloud, stream=stream)


@pytest.mark.parametrize("streamed", [False, True], ids=["answer", "stream"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", list(FALLBACKS))
def test_fallback_between_clouds(clouds: Clouds, model: str, client: str, streamed: bool) -> None:
    """The primary cloud answers 503: the attempt to the next cloud is built, credentialed (api-key, a minted
    token or Envoy's SigV4 over that attempt's body) and placed (deployment and api-version, project and location,
    region and operation) for that cloud, and carries nothing of the primary's credential."""
    primary, second = FALLBACKS[model]
    pm, sm = clouds.models[primary].mock, clouds.models[second].mock
    pm.clear()
    sm.clear()
    pm.set_fault(Fault(status=503))
    try:
        if streamed:
            got = stream(client, clouds.gw.url, model, "fall over")
            text, finish, usage = got.text, got.finish, (got.input_tokens, got.output_tokens)
        else:
            ans = ask(client, clouds.gw.url, model, "fall over")
            text, finish, usage = ans.text, ans.finish, (ans.input_tokens, ans.output_tokens)
    finally:
        pm.set_fault(None)
    assert text == f"Hello from mock {clouds.models[second].kind}. You said: fall over"
    assert finish == FINISH[client]["stop"] and usage == (11, 7)
    # One attempt each; the primary's was well-formed for it (its mock checks paths, tokens and signatures first).
    assert len(pm.requests) == 1 and len(sm.requests) == 1
    _assert_cloud_request(clouds, second, stream=streamed)
    # Nothing of the primary's credential on the attempt to the next cloud (Envoy keeps one header map per request).
    amz = {"x-amz-date", "x-amz-security-token", "x-amz-content-sha256"}
    foreign = {"azure": {"api-key"}, "bedrock": amz, "vertex": set()}[primary] - {"bedrock-claude": amz}.get(
        second, set()
    )
    assert not foreign & set(sm.last().headers), "a credential of the primary reached the next target"


@pytest.mark.parametrize("client", CLIENTS)
def test_fallback_model_whose_cloud_primary_answers(clouds: Clouds, client: str) -> None:
    """The first attempt goes to the primary as built by the listener (no attempt message): Envoy still signs it."""
    clouds.bedrock.clear()
    clouds.azure.clear()
    ans = ask(client, clouds.gw.url, "fb-bedrock-azure", "first time")
    assert ans.text == "Hello from mock bedrock. You said: first time"
    assert len(clouds.bedrock.requests) == 1 and not clouds.azure.requests
    _assert_bedrock_request(clouds, "bedrock", stream=False)
