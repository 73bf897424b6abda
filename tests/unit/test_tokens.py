"""The token refresher (extproc/ops/tokens.py): Google and Entra ID tokens minted against the mock token endpoint,
refreshed before expiry, a failing refresh retried with backoff and, once the token expired, the file Envoy reads
emptied (Envoy then refuses the request: the client's auth error); check-config's words never hold a secret."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from extproc.core.config import build_config, summary
from extproc.ops import tokens
from extproc.ops.tokens import EntraSource, GoogleSource, Refresher, TokenError, refresh_at
from tests.mocks.oauth import MockOAuth


@pytest.fixture(scope="module")
def oauth() -> Iterator[MockOAuth]:
    mock = MockOAuth(lifetime=3600).start()
    yield mock
    mock.stop()


def _vertex_cfg(sa: Path | None = None, api: str = "gemini") -> object:
    entry = {"name": "vx", "type": "vertex", "project": "mock-project", "location": "us-central1", "api": api}
    if sa is not None:
        entry["credentials_file"] = str(sa)
    data = {"version": "1", "providers": [entry], "models": [{"name": "m", "provider": "vx"}]}
    return build_config(data, "t.yaml", {})


def test_google_source_mints_a_token_from_a_service_account(oauth: MockOAuth, tmp_path: Path) -> None:
    sa = tmp_path / "sa.json"
    sa.write_text(json.dumps(oauth.service_account()))
    token, expires = GoogleSource(str(sa), {}).fetch()
    assert oauth.valid(token)
    assert 3500 < expires - __import__("time").time() <= 3600


def test_google_source_failure_says_why_without_secrets(oauth: MockOAuth, tmp_path: Path) -> None:
    sa = tmp_path / "sa.json"
    info = oauth.service_account()
    sa.write_text(json.dumps(info))
    oauth.failing = True
    try:
        with pytest.raises(TokenError) as err:
            GoogleSource(str(sa), {}).fetch()
    finally:
        oauth.failing = False
    assert "revoked" in str(err.value)
    assert "PRIVATE KEY" not in str(err.value) and info["private_key"][40:80] not in str(err.value)


def test_google_source_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="no Google credentials"):
        GoogleSource(str(tmp_path / "missing.json"), {}).fetch()


def test_entra_client_credentials(oauth: MockOAuth) -> None:
    tenant, client, secret = oauth.entra_client
    env = {"AZURE_TENANT_ID": tenant, "AZURE_CLIENT_ID": client, "AZURE_CLIENT_SECRET": secret,
           "AZURE_AUTHORITY_HOST": oauth.url}  # fmt: skip
    token, _ = EntraSource(env).fetch()
    assert oauth.valid(token)
    with pytest.raises(TokenError) as err:
        EntraSource({**env, "AZURE_CLIENT_SECRET": "wrong-secret-value"}).fetch()
    assert "AADSTS7000215" in str(err.value) and "wrong-secret-value" not in str(err.value)


def test_entra_managed_identity(oauth: MockOAuth) -> None:
    """Without a secret or a federated token: the managed identity endpoint (IMDS), whose numbers are strings."""
    import time

    url = f"{oauth.url}/metadata/identity/oauth2/token"
    token, expires = EntraSource({"AZURE_IMDS_TOKEN_URL": url}).fetch()
    assert oauth.valid(token) and 3500 < expires - time.time() <= 3600
    oauth.failing = True
    try:
        with pytest.raises(TokenError, match="no identity for this resource"):
            EntraSource({"AZURE_IMDS_TOKEN_URL": url}).fetch()
    finally:
        oauth.failing = False


def test_entra_workload_identity_sends_the_federated_token(oauth: MockOAuth, tmp_path: Path) -> None:
    tenant, client, _ = oauth.entra_client
    federated = tmp_path / "token"
    federated.write_text("eyJ.federated.jwt")
    env = {"AZURE_TENANT_ID": tenant, "AZURE_CLIENT_ID": client, "AZURE_FEDERATED_TOKEN_FILE": str(federated),
           "AZURE_AUTHORITY_HOST": oauth.url}  # fmt: skip
    with pytest.raises(TokenError, match="AADSTS7000215"):  # the mock takes only its client secret
        EntraSource(env).fetch()
    assert oauth.requests[-1]["grant_type"] == "client_credentials"


# ------------------------------------------------------------------------------------------------------ refresher
class FakeSource:
    def __init__(self, clock: list[float], lifetime: float) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.fail = False
        self.calls = 0

    def fetch(self) -> tuple[str, float]:
        self.calls += 1
        if self.fail:
            raise TokenError("mock: refresh refused")
        return f"token-{self.calls}", self.clock[0] + self.lifetime


def test_refresh_at() -> None:
    assert refresh_at(0, 3600) == 3300  # five minutes early
    assert refresh_at(0, 10) == 5  # or at half the lifetime when it is short
    assert refresh_at(0, 0.2) == 0.5  # never busy-looping


def test_refresher_writes_refreshes_invalidates_and_recovers(tmp_path: Path) -> None:
    clock = [1000.0]
    cfg = _vertex_cfg()
    (prov,) = tokens.token_providers(cfg)  # type: ignore[arg-type]
    src = FakeSource(clock, lifetime=100)
    r = Refresher([prov], str(tmp_path), {}, make_source=lambda p, env: src, clock=lambda: clock[0])
    path = tmp_path / "token-vx"

    r.step()
    assert path.read_text() == "token-1"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
    clock[0] = 1049.0  # before the refresh point (half of 100 s): nothing minted
    r.step()
    assert src.calls == 1
    clock[0] = 1050.0
    r.step()
    assert path.read_text() == "token-2" and src.calls == 2

    src.fail = True
    clock[0] = 1100.0  # token-2 valid until 1150
    due = r.step()
    assert path.read_text() == "token-2"  # a failed refresh keeps the still valid token
    assert due == 1101.0  # backoff 1 s, then 2, 4, ...
    clock[0] = 1101.0
    assert r.step() == 1103.0
    clock[0] = 1144.0  # token-2 valid until 1150, refresh still failing
    r.step()
    assert path.read_text() == "token-2"
    clock[0] = 1145.0  # 5 s (EXPIRY_MARGIN) before it expires: Envoy must not send it any more, nor after expiry
    r.step()
    assert path.read_bytes() == b""
    clock[0] = 1150.0
    r.step()
    assert path.read_bytes() == b""
    src.fail = False
    clock[0] = r.states["vx"].due
    r.step()
    assert path.read_text().startswith("token-") and r.states["vx"].failures == 0


def test_refresher_thread_keeps_a_short_token_fresh(oauth: MockOAuth, tmp_path: Path) -> None:
    """Real google-auth against the mock, 2 s tokens: the thread replaces the file before each expires."""
    import time

    short = MockOAuth(lifetime=2).start()
    try:
        sa = tmp_path / "sa.json"
        sa.write_text(json.dumps(short.service_account()))
        cfg = _vertex_cfg(sa)
        keys = tmp_path / "keys"
        r = Refresher(tokens.token_providers(cfg), str(keys), {}).start()  # type: ignore[arg-type]
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 3:
            if (keys / "token-vx").exists():
                token = (keys / "token-vx").read_text()
                if token:
                    assert short.valid(token), "the file never holds an expired token"
                    seen.add(token)
            time.sleep(0.05)
        r.stop()
        assert len(seen) >= 3
    finally:
        short.stop()


# ------------------------------------------------------------------------------------------------- check-config
def test_check_config_names_each_source_never_the_secret(tmp_path: Path) -> None:
    sa = tmp_path / "sa.json"
    sa.write_text(json.dumps({"type": "service_account", "client_email": "gw@p.iam.gserviceaccount.com",
                              "private_key": "-----BEGIN PRIVATE KEY-----PRIVKEYMATERIAL"}))  # fmt: skip
    data = {
        "version": "1",
        "providers": [
            {"name": "vx", "type": "vertex", "project": "mock-project", "location": "europe-west4",
             "credentials_file": str(sa)},
            {"name": "br", "type": "bedrock", "region": "eu-central-1"},
            {"name": "az", "type": "azure", "base_url": "https://res.openai.azure.com", "credentials": "entra"},
            {"name": "azk", "type": "azure", "base_url": "https://res.openai.azure.com", "api_key_env": "AZ_KEY"},
        ],
        "models": [{"name": n, "provider": n} for n in ("vx", "br", "az", "azk")],
    }  # fmt: skip
    env = {"AWS_ACCESS_KEY_ID": "AKIASECRETID", "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
           "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "entra-secret-value",
           "AZ_KEY": "azure-key-value"}  # fmt: skip
    cfg = build_config(data, "t.yaml", env)
    text = summary(cfg, env, source=tokens.describe)
    assert f"credentials_file {sa} (service_account, gw@p.iam.gserviceaccount.com)" in text
    assert "project mock-project, location europe-west4" in text
    assert "region eu-central-1" in text and "AWS SigV4 by Envoy from AWS_ACCESS_KEY_ID" in text
    assert "Entra ID tokens for AZURE_CLIENT_ID with AZURE_CLIENT_SECRET (set)" in text
    assert "AZ_KEY set" in text and "api-version 2024-10-21" in text
    for secret in ("AKIASECRETID", "aws-secret-value", "entra-secret-value", "azure-key-value", "PRIVKEYMATERIAL"):
        assert secret not in text
