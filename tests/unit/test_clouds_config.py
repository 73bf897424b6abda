"""Cloud provider entries in the config (azure, vertex, bedrock): their fields checked with a message naming the
entry, the base URL and path prefix derived from them, and what Envoy gets for each credential source."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.core.address import Address
from extproc.core.config import ConfigError, build_config, credential_header, key_variables
from extproc.ops.credentials import CredentialFiles, keyed_providers
from extproc.ops.envoy_config import render


def _cfg(entry: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    data = {"version": "1", "providers": [{"name": "p", **entry}], "models": [{"name": "m", "provider": "p"}]}
    return build_config(data, "t.yaml", env or {})


AZURE = {"type": "azure", "base_url": "https://res.openai.azure.com", "api_key_env": "AZ_KEY"}
VERTEX = {"type": "vertex", "project": "my-project-1", "location": "europe-west4"}
BEDROCK = {"type": "bedrock", "region": "eu-central-1"}


def test_derived_addresses() -> None:
    az = _cfg(AZURE).providers["p"]
    assert (az.format, az.path("/openai/deployments/d/chat/completions")) == (
        "azure", "/openai/deployments/d/chat/completions?api-version=2024-10-21",
    )  # fmt: skip
    v1 = _cfg({**AZURE, "api_version": "v1", "api": "responses"}).providers["p"]
    assert (v1.format, v1.path("/responses")) == ("responses", "/openai/v1/responses")
    vx = _cfg(VERTEX).providers["p"]
    assert vx.base_url == "https://europe-west4-aiplatform.googleapis.com" and vx.format == "vertex"
    assert vx.path("/publishers/google/models/g:streamGenerateContent?alt=sse") == (
        "/v1/projects/my-project-1/locations/europe-west4/publishers/google/models/g:streamGenerateContent?alt=sse"
    )
    glob = _cfg({**VERTEX, "location": "global", "api": "anthropic"}).providers["p"]
    assert glob.base_url == "https://aiplatform.googleapis.com" and glob.format == "vertex_anthropic"
    br = _cfg({**BEDROCK, "api": "anthropic"}).providers["p"]
    assert (br.base_url, br.format, br.family("anthropic.claude-x-v2:0")) == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com", "bedrock_anthropic", "anthropic",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({**VERTEX, "project": None}, "'project' is missing"),
        ({**VERTEX, "project": "Bad_Project"}, "'project' 'Bad_Project' is not valid"),
        ({**VERTEX, "location": "moon"}, "'location' 'moon' is not valid"),
        ({**VERTEX, "api": "chat"}, "'api' must be one of gemini, anthropic"),
        ({**VERTEX, "api_key_env": "K"}, "'api_key_env' and credentials: google exclude each other"),
        ({**VERTEX, "region": "x"}, "unknown field 'region' for type vertex"),
        ({**BEDROCK, "region": "nowhere"}, "'region' 'nowhere' is not valid"),
        ({"type": "bedrock"}, "'region' is missing"),
        ({**BEDROCK, "credentials": "google"}, "'credentials' must be one of aws"),
        ({**BEDROCK, "aws_profile": "a b"}, "'aws_profile' must be a profile name"),
        ({**AZURE, "api_version": "yesterday"}, "is not an Azure OpenAI API version"),
        ({**AZURE, "api": "responses"}, "api: responses needs api_version: v1"),
        ({"type": "azure", "base_url": "https://r.openai.azure.com"}, "'api_key_env' is missing"),
        ({"type": "azure", "api_key_env": "K"}, "'base_url' is missing"),
        ({**AZURE, "credentials": "entra"}, "exclude each other"),
    ],
)
def test_bad_entries(entry: dict[str, Any], words: str) -> None:
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        _cfg(entry)
    assert str(err.value).startswith("t.yaml: providers[0] (p): ") and words in str(err.value)


def test_credentials_in_envoy() -> None:
    """api-key for Azure keys, Bearer tokens from the refresher's file for Entra ID and Google, SigV4 by Envoy's own
    filter for Bedrock (no key file at all); the workers' environment loses every cloud secret variable."""
    cfg = build_config(
        {
            "version": "1",
            "providers": [
                {"name": "az", **AZURE},
                {"name": "aze", "type": "azure", "base_url": "https://r.openai.azure.com", "credentials": "entra"},
                {"name": "vx", **VERTEX},
                {"name": "br", **BEDROCK, "aws_profile": "prod"},
            ],
            "models": [{"name": n, "provider": n} for n in ("az", "aze", "vx", "br")],
        },
        "t.yaml",
        {},
    )
    p = cfg.providers
    assert credential_header(p["az"]).header == "api-key"  # type: ignore[union-attr]
    assert (credential_header(p["aze"]).header, credential_header(p["vx"]).prefix) == ("authorization", "Bearer ")  # type: ignore[union-attr]
    assert credential_header(p["br"]) is None
    assert [x.name for x in keyed_providers(cfg)] == ["az", "aze", "vx"]
    assert (p["aze"].secret_file, p["vx"].secret_file) == ("token-aze", "token-vx")
    boot = render(cfg, listen=Address.parse(":8080"), admin=Address.parse("127.0.0.1:9901"),
                  extproc=[Address.parse("127.0.0.1:50051")], credentials=CredentialFiles("/s", "/k"))  # fmt: skip
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}

    def filters(name: str) -> list[dict[str, Any]]:
        opts = clusters[f"provider_{name}"]["typed_extension_protocol_options"]
        return opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]

    signer = filters("br")[0]["typed_config"]
    assert (signer["service_name"], signer["region"], signer["use_unsigned_payload"]) == (
        "bedrock",
        "eu-central-1",
        False,
    )
    assert signer["credential_provider"]["credentials_file_provider"] == {"profile": "prod"}
    inj = filters("vx")[0]["typed_config"]["credential"]["typed_config"]
    assert inj["credential"]["sds_config"]["path_config_source"]["path"] == "/s/sds-vx.yaml"
    assert (inj["header"], inj["header_value_prefix"]) == ("authorization", "Bearer ")
    assert filters("az")[0]["typed_config"]["credential"]["typed_config"]["header"] == "api-key"
    secrets = key_variables(cfg)
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET", "AZ_KEY"} <= secrets


def test_cloud_model_ids_find_their_catalog_entries() -> None:
    """Bedrock's and Vertex's decorations of Claude's names (region prefix, vendor, version suffix, ``@date``) find the
    catalog's Claude entries, so requests are shaped to what the model accepts; Converse's other vendors get none."""
    from extproc.core import models

    cat = models.catalog()
    for name, entry in (
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        (
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "claude-haiku-4-5",
        ),
    ):
        got = cat.match("anthropic", name)
        assert got is not None and got.name == entry, name
    br = _cfg(BEDROCK).providers["p"]
    assert (br.family("us.anthropic.claude-x-v1:0"), br.family("amazon.nova-pro-v1:0")) == ("anthropic", "bedrock")


def test_cloud_credentials_a_client_sends_never_travel() -> None:
    """An Azure SDK's api-key, AWS signature headers: removed from every upstream request like the other credentials
    (also what keeps an earlier fallback attempt's credential from reaching another target)."""
    from extproc.core import routing
    from extproc.translation.formats import registry

    cfg = _cfg(VERTEX)
    target = routing.Target(cfg.providers["p"], registry.provider("vertex"), "g", passthrough=False)
    _, remove = routing.upstream_headers(cfg, target, None, "m", stream=False, path="/x", length=1)
    assert {"api-key", "x-amz-security-token", "x-amz-date", "x-amz-content-sha256", "authorization"} <= set(remove)
