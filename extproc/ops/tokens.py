"""Short-lived provider credentials (Vertex AI OAuth2 access tokens, Azure Entra ID tokens), minted off the request
path and handed to Envoy in the files its credential injectors watch.

The service never sees them: a ``Refresher`` (a thread of the launcher, or ``ai-gateway tokens`` beside an Envoy run
elsewhere) mints each token provider's token before the current one expires and renames it into ``keys_dir`` (as
``credentials.write_keys`` does for keys), where Envoy picks it up without a restart. A failing refresh is logged
(never the token) and retried with backoff; shortly before the last good token expires (``EXPIRY_MARGIN``), its file
is emptied, so Envoy refuses to send the request (401) and the client gets its own auth error saying the token refresh
failed, instead of the provider's "token expired".

Sources:

- ``google`` (``google-auth``): ``credentials_file`` (a service-account or external-account / workload identity
  federation JSON), else Application Default Credentials: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file, or
  the metadata server (GKE workload identity, GCE). Scope ``cloud-platform``.
- ``entra`` (plain OAuth2 against Entra ID, no SDK): client credentials (``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``,
  ``AZURE_CLIENT_SECRET``), workload identity (``AZURE_FEDERATED_TOKEN_FILE`` as the client assertion, as AKS sets
  it), else the managed identity endpoint (IMDS). ``AZURE_AUTHORITY_HOST`` overrides the login host. Scope
  ``https://cognitiveservices.azure.com/.default``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Protocol

import httpx

from extproc.core.config import Config, Provider
from extproc.ops.credentials import write_keys

log = logging.getLogger("ai-gateway.tokens")

GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
ENTRA_AUTHORITY = "https://login.microsoftonline.com/"
IMDS_TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
MAX_BACKOFF = 30.0  # seconds between attempts of a failing refresh, at most
EARLY = 300.0  # refresh this long before expiry (or at half the token's lifetime, if that is sooner)
# While refreshes fail, the token is withdrawn this long before it expires (at most a quarter of its lifetime): Envoy
# takes a moment to read the emptied file, and a request sent just before expiry must not arrive after it.
EXPIRY_MARGIN = 5.0


class TokenError(Exception):
    """A token could not be minted; the message says why and never holds a secret."""


class TokenSource(Protocol):
    def fetch(self) -> tuple[str, float]:
        """A fresh token and when it expires (unix seconds); ``TokenError`` when it cannot."""
        ...


# ---------------------------------------------------------------------------------------------------------------------
# Google (Vertex AI)
# ---------------------------------------------------------------------------------------------------------------------
class GoogleSource:
    """OAuth2 access tokens from google-auth (service account, external account, ADC, metadata server)."""

    def __init__(self, credentials_file: str | None, env: dict[str, str]) -> None:
        self.credentials_file = credentials_file
        self.env = env
        self._creds: object | None = None

    def _credentials(self) -> object:
        if self._creds is None:
            import google.auth

            try:
                if self.credentials_file:
                    creds = _load_google_file(self.credentials_file)
                else:
                    creds, _ = google.auth.default(scopes=[GOOGLE_SCOPE])
            except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as exc:
                raise TokenError(f"no Google credentials: {_short(exc)}") from None
            self._creds = creds
        return self._creds

    def fetch(self) -> tuple[str, float]:
        import google.auth.exceptions
        import google.auth.transport.requests

        creds = self._credentials()
        try:
            creds.refresh(google.auth.transport.requests.Request())  # type: ignore[attr-defined]
        except google.auth.exceptions.GoogleAuthError as exc:
            raise TokenError(f"Google token refresh failed: {_short(exc)}") from None
        token = getattr(creds, "token", None)
        expiry = getattr(creds, "expiry", None)
        if not isinstance(token, str) or not token:
            raise TokenError("Google token refresh returned no token")
        # google-auth keeps expiry as a naive UTC datetime
        expires = expiry.replace(tzinfo=UTC).timestamp() if expiry is not None else time.time() + 3600
        return token, expires


# ---------------------------------------------------------------------------------------------------------------------
# Entra ID (Azure OpenAI)
# ---------------------------------------------------------------------------------------------------------------------
class EntraSource:
    """Entra ID tokens for Azure OpenAI over plain OAuth2 (client secret, workload identity, managed identity)."""

    def __init__(self, env: dict[str, str], timeout: float = 10.0) -> None:
        self.env = env
        self.timeout = timeout

    def fetch(self) -> tuple[str, float]:
        env = self.env
        tenant, client = env.get("AZURE_TENANT_ID"), env.get("AZURE_CLIENT_ID")
        secret, token_file = env.get("AZURE_CLIENT_SECRET"), env.get("AZURE_FEDERATED_TOKEN_FILE")
        try:
            if tenant and client and (secret or token_file):
                form = {"grant_type": "client_credentials", "client_id": client, "scope": ENTRA_SCOPE}
                if secret:
                    form["client_secret"] = secret
                else:
                    assert token_file is not None
                    try:
                        assertion = Path(token_file).read_text().strip()
                    except OSError as exc:
                        raise TokenError(f"cannot read AZURE_FEDERATED_TOKEN_FILE: {exc.strerror}") from None
                    form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    form["client_assertion"] = assertion
                authority = (env.get("AZURE_AUTHORITY_HOST") or ENTRA_AUTHORITY).rstrip("/")
                resp = httpx.post(f"{authority}/{tenant}/oauth2/v2.0/token", data=form, timeout=self.timeout)
            else:
                params = {"api-version": "2018-02-01", "resource": "https://cognitiveservices.azure.com"}
                if client:
                    params["client_id"] = client
                url = env.get("AZURE_IMDS_TOKEN_URL") or IMDS_TOKEN_URL
                resp = httpx.get(url, params=params, headers={"Metadata": "true"}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise TokenError(f"Entra ID token endpoint unreachable: {type(exc).__name__}") from None
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code != 200 or not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            why = data.get("error_description") or data.get("error") if isinstance(data, dict) else None
            raise TokenError(f"Entra ID refused the token request (HTTP {resp.status_code}): {_short(why or '')}")
        lifetime = data.get("expires_in")
        try:
            expires = time.time() + float(lifetime) if lifetime is not None else float(data["expires_on"])
        except (KeyError, TypeError, ValueError):
            expires = time.time() + 3600
        return data["access_token"], expires


def _load_google_file(path: str) -> object:
    """A credentials file of the kinds the gateway takes, each with its own loader (google-auth warns against its
    generic one for files of unknown kind): a service account, workload identity federation (an external account,
    AWS or file/URL sourced), or a user's authorized_user file from ``gcloud auth application-default login``."""
    info = json.loads(Path(path).read_text())
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=[GOOGLE_SCOPE])
    if kind == "external_account":
        source = info.get("credential_source") or {}
        if str(source.get("environment_id", "")).startswith("aws"):
            from google.auth import aws

            return aws.Credentials.from_info(info, scopes=[GOOGLE_SCOPE])
        from google.auth import identity_pool

        return identity_pool.Credentials.from_info(info, scopes=[GOOGLE_SCOPE])
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=[GOOGLE_SCOPE])
    raise ValueError(
        f"{path}: credentials of type {kind!r} are not supported (service_account, external_account, authorized_user)"
    )


def _short(value: object) -> str:
    """An error's words, one line, bounded (provider error descriptions hold no secrets, but may be long)."""
    text = " ".join(str(value).split())
    return text[:300]


# ---------------------------------------------------------------------------------------------------------------------
# What check-config says (never a secret)
# ---------------------------------------------------------------------------------------------------------------------
def describe(p: Provider, env: dict[str, str]) -> str:
    """Where the provider's computed credential comes from, as ``check-config`` prints it."""
    if p.credentials == "google":
        path = p.credentials_file or env.get("GOOGLE_APPLICATION_CREDENTIALS")
        origin = "credentials_file" if p.credentials_file else "GOOGLE_APPLICATION_CREDENTIALS"
        if path:
            return f"google-auth tokens from {origin} {path} ({_google_file_kind(path)}), refreshed by the gateway"
        adc = Path(env.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
        if (adc / "application_default_credentials.json").exists():
            return "google-auth tokens from gcloud's application default credentials, refreshed by the gateway"
        return "google-auth tokens from the metadata server (GKE workload identity, GCE), refreshed by the gateway"
    if p.credentials == "entra":
        if env.get("AZURE_TENANT_ID") and env.get("AZURE_CLIENT_ID") and env.get("AZURE_CLIENT_SECRET"):
            return "Entra ID tokens for AZURE_CLIENT_ID with AZURE_CLIENT_SECRET (set), refreshed by the gateway"
        if env.get("AZURE_TENANT_ID") and env.get("AZURE_CLIENT_ID") and env.get("AZURE_FEDERATED_TOKEN_FILE"):
            return "Entra ID tokens by workload identity (AZURE_FEDERATED_TOKEN_FILE), refreshed by the gateway"
        return "Entra ID tokens from the managed identity endpoint (IMDS), refreshed by the gateway"
    if p.credentials == "aws":
        return "AWS SigV4 by Envoy from " + _aws_source(p, env)
    return f"credentials: {p.credentials}"


def _google_file_kind(path: str) -> str:
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return "MISSING or unreadable: token refresh will fail"
    kind = info.get("type") if isinstance(info, dict) else None
    email = info.get("client_email") if isinstance(info, dict) else None
    return f"{kind}, {email}" if email else str(kind)


def _aws_source(p: Provider, env: dict[str, str]) -> str:
    """The first source of the standard AWS chain that applies (what Envoy's signer will use)."""
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        extra = " and AWS_SESSION_TOKEN" if env.get("AWS_SESSION_TOKEN") else ""
        return f"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY{extra} (set) in Envoy's environment"
    profile = p.aws_profile or env.get("AWS_PROFILE") or "default"
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path.home() / ".aws" / "credentials")
    if p.aws_profile or Path(shared).exists():
        return f"profile '{profile}' of {shared}"
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
        return "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN: IRSA / EKS pod identity)"
    if env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return "container credentials (ECS task role / EKS pod identity)"
    return "instance metadata (IMDS: the EC2 instance role), if there is one; nothing else of the chain is set"


# ---------------------------------------------------------------------------------------------------------------------
# The refresher
# ---------------------------------------------------------------------------------------------------------------------
def source_for(p: Provider, env: dict[str, str]) -> TokenSource:
    if p.credentials == "google":
        return GoogleSource(p.credentials_file, env)
    if p.credentials == "entra":
        return EntraSource(env)
    raise ValueError(f"provider {p.name} has no token source")


def token_providers(cfg: Config) -> list[Provider]:
    return [p for p in cfg.used_providers() if p.token_source is not None]


@dataclass
class _State:
    provider: Provider
    source: TokenSource
    due: float = 0.0  # when to mint the next token
    expires: float = 0.0  # when the token in the file stops working (0: none written)
    failures: int = 0
    last_error: str | None = None
    history: list[float] = field(default_factory=list)  # when tokens were written (tests, logs)


def _withdraw_at(st: _State) -> float:
    """When the token in the file is emptied if no new one could be minted by then."""
    minted = st.history[-1] if st.history else st.expires
    return st.expires - min(EXPIRY_MARGIN, (st.expires - minted) / 4)


def refresh_at(now: float, expires: float) -> float:
    """When to mint the next token: ``EARLY`` seconds before expiry, or at half its lifetime when it is too short for
    that (never sooner than half a second)."""
    return now + max(0.5, expires - now - EARLY, (expires - now) / 2)


class Refresher:
    """Keeps every token provider's token file fresh, in a daemon thread (``start``), or driven by ``step``."""

    def __init__(
        self,
        providers: list[Provider],
        keys_dir: str,
        env: dict[str, str],
        make_source: Callable[[Provider, dict[str, str]], TokenSource] = source_for,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys_dir = keys_dir
        self.env = env
        self.clock = clock
        self._make = make_source
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.states: dict[str, _State] = {}
        self.update(providers)

    def update(self, providers: list[Provider]) -> None:
        """The token providers of a (re)loaded config: new ones are minted at once, gone ones forgotten."""
        with self._lock:
            old = self.states
            self.states = {}
            for p in providers:
                st = old.get(p.name)
                if st is None or st.provider != p:
                    st = _State(p, self._make(p, self.env))
                self.states[p.name] = st
        self._wake.set()

    def step(self) -> float:
        """Mint every token that is due; returns when the next one is."""
        with self._lock:
            states = list(self.states.values())
        for st in states:
            now = self.clock()
            if st.due <= now:
                self._refresh(st, now)
            if st.expires and st.failures and _withdraw_at(st) <= self.clock():
                self._invalidate(st)
        return min((st.due for st in states), default=self.clock() + 60)

    def _refresh(self, st: _State, now: float) -> None:
        name = st.provider.name
        try:
            token, expires = st.source.fetch()
        except TokenError as exc:
            st.failures += 1
            st.last_error = str(exc)
            backoff = min(MAX_BACKOFF, 2.0 ** (st.failures - 1))
            withdraw = _withdraw_at(st) if st.expires else 0.0
            st.due = now + backoff if withdraw <= now else min(now + backoff, withdraw)
            log.error("provider %s: %s (attempt %d; retrying in %.0fs)", name, exc, st.failures, st.due - now)
            return
        except Exception as exc:  # a source's own bug must not end the thread: it is a failed refresh too
            st.failures += 1
            st.last_error = f"{type(exc).__name__}"
            st.due = now + min(MAX_BACKOFF, 2.0 ** (st.failures - 1))
            log.error("provider %s: token refresh failed (%s)", name, type(exc).__name__)
            return
        secret_file = st.provider.secret_file
        assert secret_file is not None
        write_keys(self.keys_dir, {secret_file: token})
        if st.failures:
            log.info("provider %s: token refresh works again after %d failure(s)", name, st.failures)
        st.failures, st.last_error = 0, None
        st.expires = expires
        st.due = refresh_at(now, expires)
        st.history.append(now)
        log.debug("provider %s: new token, valid for %.0fs", name, expires - now)

    def _invalidate(self, st: _State) -> None:
        """The last token is (about to be) expired and no new one could be minted: Envoy must not send it (an empty
        file: 401)."""
        secret_file = st.provider.secret_file
        assert secret_file is not None
        path = Path(self.keys_dir) / secret_file
        with contextlib.suppress(OSError):
            if path.read_bytes() == b"":
                return
        write_keys(self.keys_dir, {secret_file: ""})
        log.error(
            "provider %s: its token expired and could not be refreshed: requests get an auth error", st.provider.name
        )

    def start(self) -> Refresher:
        self._thread = threading.Thread(target=self._run, name="token-refresher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.step()
            self._wake.clear()
            self._wake.wait(max(0.05, min(due - self.clock(), 60.0)))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run_forever(cfg: Config, keys_dir: str, env: dict[str, str] | None = None) -> int:
    """``ai-gateway tokens``: keep the token files in ``keys_dir`` fresh until SIGTERM (compose, Kubernetes)."""
    import signal

    providers = token_providers(cfg)
    if not providers:
        log.error("no provider of the config takes a token (credentials: google or entra)")
        return 1
    refresher = Refresher(providers, keys_dir, dict(os.environ) if env is None else env)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    refresher.start()
    log.info("refreshing tokens of %s into %s", ", ".join(p.name for p in providers), keys_dir)
    done.wait()
    refresher.stop()
    return 0
