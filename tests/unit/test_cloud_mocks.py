"""The Bedrock mock's SigV4 check, against requests signed by botocore itself: a good signature passes; no signature,
another key, a wrong secret, a body changed after signing, an unsigned body hash and a stale date are refused with
AWS's own words."""

from __future__ import annotations

import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.mocks.bedrock_api import SigV4Verifier
from tests.mocks.server import ApiError

KEY = ("AKIDMOCK", "secret/key+1", "session")
URL = "http://127.0.0.1:9000/model/amazon.nova-pro-v1%3A0/converse"
BODY = b'{"messages":[]}'


def _signed(secret: str = KEY[1], body: bytes = BODY, access: str = KEY[0]) -> dict:
    req = AWSRequest(method="POST", url=URL, data=body, headers={"content-type": "application/json"})
    auth = SigV4Auth(Credentials(access, secret, KEY[2]), "bedrock", "us-east-1")
    req.headers["x-amz-content-sha256"] = __import__("hashlib").sha256(body).hexdigest()
    auth.add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers.setdefault("host", "127.0.0.1:9000")
    return headers


def _verify(headers: dict, body: bytes = BODY, late: float = 0.0) -> None:
    path = URL[len("http://127.0.0.1:9000") :]
    SigV4Verifier(*KEY, region="us-east-1").verify("POST", path, headers, body, now=time.time() + late)


def test_botocore_signature_passes() -> None:
    _verify(_signed())


@pytest.mark.parametrize(
    ("headers", "body", "words"),
    [
        ({"host": "127.0.0.1:9000"}, BODY, "Missing Authentication Token"),
        (None, BODY + b" ", "signature we calculated does not match"),  # changed after signing
        ("wrong-secret", BODY, "signature we calculated does not match"),
        ("other-key", BODY, "security token included in the request is invalid"),
        ("stale", BODY, "Signature expired"),
    ],
)
def test_refused(headers: object, body: bytes, words: str) -> None:
    if headers is None:
        headers = _signed()
    elif headers == "wrong-secret":
        headers = _signed(secret="not-it")
    elif headers == "other-key":
        headers = _signed(access="AKIDOTHER")
    late = 0.0
    if headers == "stale":  # a signature from ten minutes ago
        headers, late = _signed(), 600.0
    with pytest.raises(ApiError) as err:
        _verify(headers, body, late)  # type: ignore[arg-type]
    assert err.value.status == 403 and words in err.value.message


def test_unsigned_payload_refused() -> None:
    headers = _signed()
    headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    with pytest.raises(ApiError, match="signature we calculated"):
        _verify(headers)
