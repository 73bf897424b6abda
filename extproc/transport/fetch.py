"""Opt-in downloads of URL images and documents (``image_fetch``): the only I/O besides gRPC, kept in its own module.

``extproc/media.py`` decides what to fetch and puts the bytes in place; this module only downloads, within the
policy: https only unless ``allow_http``, redirects followed only to allowed hosts, each body at most ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import urljoin

from extproc.translation.errors import GatewayError, invalid
from extproc.translation.media import Fetched, FetchPolicy, check_url

_MAX_REDIRECTS = 3
MAX_URLS = 16  # per request


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


async def fetch_all(
    urls: list[str], policy: FetchPolicy, transport: object | None = None
) -> dict[str, Fetched] | GatewayError:
    """Download every URL (sequentially; a request rarely names more than a few). Never raises. ``transport`` is an
    ``httpx.AsyncBaseTransport`` for tests."""
    import httpx  # only the servicer path that fetches needs it

    if len(urls) > MAX_URLS:
        return invalid(f"a request may name at most {MAX_URLS} media URLs to fetch ({len(urls)} given)")
    out: dict[str, Fetched] = {}
    url = ""
    total = 0
    try:
        async with httpx.AsyncClient(
            timeout=policy.timeout,
            follow_redirects=False,
            transport=transport,  # type: ignore[arg-type]
        ) as client:
            async with asyncio.timeout(policy.timeout * 2):  # one deadline for the whole request's downloads
                for url in urls:
                    out[url] = got = await _fetch_one(client, url, policy)
                    total += len(got.data)
                    if total > policy.max_bytes * 4:
                        return invalid(f"the media URLs of this request add up to more than {policy.max_bytes * 4}"
                                       " bytes")  # fmt: skip
    except GatewayError as err:
        return err
    except Exception as exc:  # httpx.HTTPError, InvalidURL, IDNA errors...: the client named a URL we cannot read
        return invalid(f"could not fetch {url[:200]!r}: {type(exc).__name__}", param="messages")
    return out


async def _fetch_one(client: object, url: str, policy: FetchPolicy) -> Fetched:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    target = url
    for _ in range(_MAX_REDIRECTS + 1):
        check_url(target, policy)
        async with client.stream("GET", target) as resp:
            if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                target = urljoin(target, resp.headers["location"])
                continue
            if resp.status_code != 200:
                raise invalid(f"fetching {url[:200]!r} failed with HTTP {resp.status_code}", param="messages")
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise invalid(f"{url[:200]!r} is larger than image_fetch.max_bytes ({policy.max_bytes})")
            buf = bytearray()
            async for chunk in resp.aiter_bytes():
                buf += chunk
                if len(buf) > policy.max_bytes:
                    raise invalid(f"{url[:200]!r} is larger than image_fetch.max_bytes ({policy.max_bytes})")
            media = _media_type(resp.headers.get("content-type"))
            if not (media.startswith("image/") or media in ("application/pdf", "text/plain")):
                raise invalid(f"{url[:200]!r} is served as '{media or 'unknown'}', not an image or a document")
            return Fetched(media, base64.b64encode(bytes(buf)).decode("ascii"))
    raise invalid(f"{url[:200]!r}: too many redirects", param="messages")
