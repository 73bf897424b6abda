"""A strict mock OAuth2 token endpoint for the clouds' short-lived credentials, on a free port of 127.0.0.1.

    POST /token                       Google: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with a
                                      service account's RS256-signed JWT ``assertion`` (checked against the account's
                                      public key: issuer, audience = this URL, scope, expiry), as google-auth sends it
    POST /{tenant}/oauth2/v2.0/token  Entra ID: ``grant_type=client_credentials`` with ``client_id``, ``scope``
                                      ``https://cognitiveservices.azure.com/.default`` and ``client_secret``
    GET /metadata/identity/oauth2/token  Azure's managed identity endpoint (IMDS): ``Metadata: true``, ``resource``

Each access token it issues lives ``lifetime`` seconds; ``valid(token)`` says whether a token is one it issued and
has not expired (the cloud mocks ask it). ``failing = True`` makes every token request fail (``invalid_grant``),
as a revoked key or a broken identity federation would.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class MockOAuth:
    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self.failing = False
        self.issued: dict[str, float] = {}  # token -> expiry (time.time())
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = "gateway@mock-project.iam.gserviceaccount.com"
        self.entra_client = ("mock-tenant", "mock-client-id", "mock-client-secret")
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                """Azure's managed identity endpoint (IMDS): ``Metadata: true`` required, strings for numbers."""
                path, _, query = self.path.partition("?")
                params = {k: v[0] for k, v in parse_qs(query).items()}
                status, body = mock._imds(path, params, self.headers.get("Metadata"))
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, body = mock._answer(self.path, {k: v[0] for k, v in parse_qs(raw.decode()).items()})
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def start(self) -> MockOAuth:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def service_account(self, project: str = "mock-project") -> dict[str, Any]:
        """A service-account JSON (what ``credentials_file`` / GOOGLE_APPLICATION_CREDENTIALS name) for this mock."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "mock-key-id",
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        }

    def valid(self, token: str) -> bool:
        with self._lock:
            expiry = self.issued.get(token)
        return expiry is not None and expiry > time.time()

    def issued_count(self) -> int:
        with self._lock:
            return len(self.issued)

    # ---- the endpoint
    def _answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append({"path": path, "grant_type": form.get("grant_type")})
        if self.failing:
            return 400, {"error": "invalid_grant", "error_description": "mock: the credential was revoked"}
        if path == "/token":
            err = self._check_google(form)
        elif path.endswith("/oauth2/v2.0/token"):
            err = self._check_entra(path, form)
        else:
            return 404, {"error": "not_found"}
        if err:
            return 400, {"error": "invalid_grant", "error_description": err}
        token = "ya29.mock-" + secrets.token_urlsafe(16)
        with self._lock:
            self.issued[token] = time.time() + self.lifetime
        return 200, {"access_token": token, "expires_in": int(self.lifetime), "token_type": "Bearer"}

    def _imds(self, path: str, params: dict[str, str], metadata: str | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append({"path": path, "grant_type": "managed_identity"})
        if path != "/metadata/identity/oauth2/token" or metadata != "true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
        if params.get("resource") != "https://cognitiveservices.azure.com" or self.failing:
            return 400, {"error": "invalid_resource", "error_description": "mock: no identity for this resource"}
        token = "eyJ.mock-mi-" + secrets.token_urlsafe(16)
        with self._lock:
            self.issued[token] = time.time() + self.lifetime
        return 200, {"access_token": token, "expires_in": str(int(self.lifetime)),
                     "expires_on": str(int(time.time() + self.lifetime)), "token_type": "Bearer"}  # fmt: skip

    def _check_google(self, form: dict[str, str]) -> str | None:
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return "unsupported grant_type"
        try:
            head, payload, sig = form["assertion"].split(".")
            header = json.loads(_b64url(head))
            claims = json.loads(_b64url(payload))
            self.key.public_key().verify(
                _b64url(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception as exc:
            return f"invalid assertion: {type(exc).__name__}"
        if header.get("alg") != "RS256" or header.get("kid") != "mock-key-id":
            return "wrong key"
        # google-auth addresses its assertions to Google's token endpoint whatever token_uri says (Google accepts that)
        if claims.get("iss") != self.client_email or claims.get("aud") not in (self.token_uri, GOOGLE_TOKEN_URI):
            return "wrong issuer or audience"
        if GOOGLE_SCOPE not in str(claims.get("scope", "")).split():
            return "missing scope cloud-platform"
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            return "assertion expired"
        return None

    def _check_entra(self, path: str, form: dict[str, str]) -> str | None:
        tenant, client, secret = self.entra_client
        if path != f"/{tenant}/oauth2/v2.0/token":
            return f"AADSTS90002: Tenant '{path.split('/')[1]}' not found"
        if form.get("grant_type") != "client_credentials" or form.get("scope") != ENTRA_SCOPE:
            return "AADSTS70011: invalid scope or grant"
        if form.get("client_id") != client or form.get("client_secret") != secret:
            return "AADSTS7000215: Invalid client secret provided"
        return None
