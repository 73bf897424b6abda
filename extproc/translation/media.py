"""Which URL images and documents a provider needs inline, and putting fetched bytes in their place (pure).

The gateway never downloads a URL a client names unless the config opts in (``image_fetch``): fetching arbitrary URLs
from inside a network is a server-side request forgery hole. Three steps, only the middle one does I/O:

1. ``plan(req, provider_type, policy)`` (pure): the URLs this translated request needs inlined for its provider;
   a clear 400 when one needs inlining and fetching is off, the host is not allowed, or the URL can never work.
2. ``await fetch.fetch_all(urls, policy)`` (``extproc/fetch.py``, the I/O): download them (https only unless
   ``allow_http``; redirects followed only to allowed hosts; each body at most ``max_bytes``); returns
   ``{url: Fetched}`` or the ``GatewayError`` to answer.
3. ``substitute(req, fetched)`` (pure): put the bytes in place of the URLs (base64 with the served media type).

The servicer sees a ``FetchMedia`` action from ``Exchange.on_request_body`` and answers it with
``ex.on_fetched(await fetch.fetch_all(action.urls, action.policy))``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from extproc.translation import canonical as c
from extproc.translation.errors import invalid

# Hosts whose file URIs only Gemini can read (the Files API needs the provider's key; YouTube links Gemini takes).
_GEMINI_HOSTS = ("generativelanguage.googleapis.com",)  # Gemini File API URIs
GEMINI_URL_HOSTS = (*_GEMINI_HOSTS, "www.youtube.com", "youtube.com", "youtu.be")  # what Gemini reads itself
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
# Standard or URL-safe alphabet (the google-genai SDK sends URL-safe), padding optional, whitespace tolerated.
_BASE64 = re.compile(r"[A-Za-z0-9+/\-_\s]*={0,2}\s*")
DEFAULT_TIMEOUT = 10.0


@dataclass(slots=True, frozen=True)
class FetchPolicy:
    """``image_fetch`` in the config. Off by default."""

    enabled: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    allow_hosts: tuple[str, ...] = ()  # exact host names, or "*.example.com" for subdomains
    allow_http: bool = False  # plain http:// (tests, internal hosts); https only by default
    timeout: float = DEFAULT_TIMEOUT

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for pattern in self.allow_hosts:
            p = pattern.lower()
            if p.startswith("*.") and (host.endswith(p[1:]) and host != p[2:]):
                return True
            if host == p:
                return True
        return False


@dataclass(slots=True)
class Fetched:
    media_type: str
    data: str  # base64


@dataclass(slots=True)
class FetchMedia:
    """Exchange action: fetch these URLs, then call ``Exchange.on_fetched`` with the result of ``fetch_all``."""

    urls: list[str]
    policy: FetchPolicy
    headers: list[tuple[str, str]] = field(default_factory=list)


def _media_parts(req: c.Request) -> list[c.Image | c.Document]:
    out: list[c.Image | c.Document] = []

    def walk(parts: list[c.Part]) -> None:
        for p in parts:
            if isinstance(p, c.Image | c.Document):
                out.append(p)
            elif isinstance(p, c.ToolResult):
                walk(p.content)

    for m in req.messages:
        walk(m.parts)
    return out


def url_host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_gemini_file(url: str) -> bool:
    """A Gemini File API URI: only Gemini providers can read it."""
    return url_host(url) in _GEMINI_HOSTS


def plan(req: c.Request, fmt: Any, policy: FetchPolicy) -> list[str]:
    """The URLs that must be fetched and inlined before ``req`` can be built for a provider speaking ``fmt`` (a
    ``WireFormat``: its ``fetches_url`` says which URLs it reads itself)."""
    provider_type = fmt.NAME
    urls: list[str] = []
    for part in _media_parts(req):
        if part.data is not None:
            if not _BASE64.fullmatch(part.data):
                kind = "image" if isinstance(part, c.Image) else "document"
                raise invalid(f"{kind} data is not valid base64", param="messages")
            continue
        if not part.url or part.url.startswith("data:"):
            continue
        scheme = urlsplit(part.url).scheme.lower()
        reads = (
            fmt.fetches_url(part)
            if scheme in ("http", "https")
            else f"URL scheme '{scheme}:' cannot be read by provider type '{provider_type}'"
        )
        if reads is True:
            continue
        never = reads if isinstance(reads, str) else None
        kind = "image" if isinstance(part, c.Image) else "document"
        if never:
            raise invalid(f"{kind} URL {part.url[:200]!r}: {never}", param="messages")
        if not policy.enabled:
            raise invalid(
                f"{kind} URL {part.url[:200]!r}: provider type '{provider_type}' needs the {kind} inline (base64) "
                "and this gateway does not fetch URLs (send the bytes, or enable image_fetch in the config)",
                param="messages",
            )
        check_url(part.url, policy, kind)
        if part.url not in urls:
            urls.append(part.url)
    return urls


def check_url(url: str, policy: FetchPolicy, kind: str = "image") -> None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and policy.allow_http):
        raise invalid(f"{kind} URL {url[:200]!r}: only https URLs are fetched", param="messages")
    if parts.username or parts.password:
        raise invalid(f"{kind} URL {url[:200]!r}: URLs with credentials are not fetched", param="messages")
    if not parts.hostname or not policy.host_allowed(parts.hostname):
        raise invalid(
            f"{kind} URL {url[:200]!r}: host '{parts.hostname}' is not in image_fetch.allow_hosts", param="messages"
        )


def substitute(req: c.Request, fetched: dict[str, Fetched]) -> None:
    """Replace each fetched URL by its bytes (in place)."""
    for part in _media_parts(req):
        got = fetched.get(part.url or "") if part.data is None else None
        if got is None:
            continue
        part.data = got.data
        part.media_type = got.media_type
        part.url = None
