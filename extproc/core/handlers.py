"""Response handlers: what the gateway does with a provider's answer, one class per kind of exchange (pure).

The exchange picks one when it forwards a request (``Exchange.on_request_body``):

- ``PassThrough``: same format, not streamed: the provider's bytes are the client's; read for usage.
- ``PassThroughStream``: same format, streamed: bytes go out as they come (or through the format's filter), decoded
  on the side for usage and time to first token.
- ``Translate``: another format, not streamed: the whole answer is parsed and rebuilt in the client's format.
- ``TranslateStream``: another format, streamed: provider events decoded and re-encoded chunk by chunk.
- ``TranslateCount``: a token count answered by a provider of another format.
- ``EnvoyReply``: Envoy answered before a provider was chosen (e.g. a chunked body over the limit).

Every handler answers errors the same way (``Handler``): Envoy's own replies (tagged by the bootstrap's local-reply
mappers), provider errors and answers that are not what they claim to be, each in the client's format.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson

from extproc.core.actions import CONTINUE, Forward
from extproc.core.contract import LOCAL_ERROR_HEADER, NO_CREDENTIAL
from extproc.core.record import Record
from extproc.translation import canonical as c
from extproc.translation.errors import GatewayError, type_for_status
from extproc.translation.formats import registry
from extproc.translation.formats.contract import PassThroughStream as Filter
from extproc.translation.formats.contract import (
    ProviderFormat,
    StreamDecoder,
    StreamEncoder,
    StreamOptions,
    WireFormat,
)

_JSON = "application/json"


class Handler:
    """The response side of one exchange; subclasses decide what a good answer becomes."""

    __slots__ = ("client", "local_error", "provider", "provider_fmt", "record", "request_id", "status")

    def __init__(self, record: Record, client: WireFormat, provider_fmt: ProviderFormat | None, provider: Any) -> None:
        self.record = record
        self.client = client
        self.provider_fmt = provider_fmt
        self.provider = provider  # config.Provider (None for EnvoyReply)
        self.request_id = record.request_id
        self.status = 0
        self.local_error: str | None = None

    # ---------------------------------------------------------------------------------------------------- phases
    def on_headers(self, headers: dict[str, str]) -> Forward:
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 502
        self.record.status = self.status
        self.local_error = headers.get(LOCAL_ERROR_HEADER)
        if self.local_error:
            return Forward(remove_headers=[LOCAL_ERROR_HEADER])
        return self.headers(headers.get("content-type", ""))

    def headers(self, ctype: str) -> Forward:
        return CONTINUE

    def on_body(self, body: bytes, end_of_stream: bool) -> Forward:
        """The whole (buffered) body; streaming handlers override this for their STREAMED chunks."""
        return self.whole(body)

    @property
    def streamed(self) -> bool:
        """The response body arrives chunk by chunk (STREAMED mode)."""
        return False

    # ---------------------------------------------------------------------------------------------------- errors
    def whole(self, body: bytes) -> Forward:
        """A whole answer: errors in the client's format, else ``good``."""
        if self.local_error:
            return self.error_body(self.envoy_error(self.local_error, _local_reply_text(body)))
        fmt = self.provider_fmt
        if fmt is None:
            status = self.status or 500
            return self.error_body(GatewayError(type_for_status(status), _local_reply_text(body), status))
        if self.status >= 400 or self.status < 200:
            return self.error_body(fmt.parse_error(self.status, body))
        return self.good(body)

    def good(self, body: bytes) -> Forward:
        return CONTINUE

    def envoy_error(self, kind: str, text: str) -> GatewayError:
        """A reply Envoy made itself for this exchange (tagged by the bootstrap's local-reply mappers)."""
        provider = self.provider
        name = provider.name if provider is not None else "?"
        if kind == NO_CREDENTIAL:
            source = getattr(provider, "token_source", None)
            if source is not None:
                return GatewayError(
                    "auth",
                    f"the gateway has no valid access token for provider '{name}': refreshing its {source} token "
                    "failed or has not completed (the gateway's log says why; `ai-gateway check-config` shows the "
                    "credential source it found)",
                    401,
                )
            var = provider.api_key_env if provider is not None else None
            return GatewayError("auth", f"the gateway has no API key for provider '{name}' (set {var})", 401)
        if kind == "timeout":
            return GatewayError(kind, f"provider '{name}' did not answer in time: {text}", self.status or 504)
        return GatewayError(kind, f"could not reach provider '{name}': {text}", self.status or 502)

    def error_body(self, err: GatewayError, status: int | None = None) -> Forward:
        if status is not None:
            err.status = status
        self.record.error_type = err.type
        self.record.status = self.status = err.status
        out = self.client.build_error(err, request_id=self.request_id)
        headers = [(":status", str(err.status)), ("content-type", _JSON), ("content-length", str(len(out)))]
        return Forward(headers, body=out)

    def provider_name(self) -> str:
        return self.provider.name if self.provider is not None else "?"

    # ---------------------------------------------------------------------------------------------------- streams
    def account(self, ev: c.Event) -> None:
        """What a stream event tells the record: usage, time to first token, an in-stream error."""
        if isinstance(ev, c.UsageUpdate | c.MessageStart):
            if ev.usage is not None:
                self.record.usage = c.merge_usage(self.record.usage or c.Usage(), ev.usage)
        elif self.record.ttft is None and isinstance(ev, c.TextDelta | c.ToolCallStart | c.ThinkingDelta):
            self.record.ttft = time.monotonic() - self.record.started
        elif isinstance(ev, c.StreamError):
            self.record.error_type = ev.error.type


class EnvoyReply(Handler):
    """Envoy answered before the service chose a provider: its reply becomes an error in the client's format."""

    __slots__ = ()


class PassThrough(Handler):
    """Same format both sides, not streamed: the provider's bytes (answers and errors alike) are already the client's.
    The body is still read, unchanged, for usage (metrics, logs), except error bodies; an error page that is not JSON
    (a proxy's HTML 502) is wrapped like any other error, and a 2xx that is not JSON becomes a 502. A cloud's variant
    of the client's format (``provider_fmt``) answers in that format too, but its errors are the cloud's own: they are
    read and answered in the client's shape."""

    __slots__ = ("embeddings", "not_json", "read_usage")

    def __init__(
        self,
        record: Record,
        client: WireFormat,
        provider: Any,
        read_usage: bool,
        fmt: ProviderFormat | None = None,
        embeddings: bool = False,
    ) -> None:
        super().__init__(record, client, fmt or client, provider)
        self.read_usage = read_usage
        self.not_json = False
        self.embeddings = embeddings  # the answer is an embeddings answer (read for its usage as one)

    def headers(self, ctype: str) -> Forward:
        if self.status >= 400 and self.provider_fmt is not self.client:
            self.record.error_type = type_for_status(self.status)
            return CONTINUE  # the cloud's error, read whole and answered in the client's format
        if self.status >= 400:
            self.record.error_type = type_for_status(self.status)
            return CONTINUE if "json" not in ctype else Forward(response_body_mode="NONE")
        if "json" not in ctype:  # a web page where JSON should be: wrapped as an error
            self.not_json = True
            return CONTINUE
        if not self.read_usage:
            return Forward(response_body_mode="NONE")  # one gRPC message less; no tokens in metrics for these
        return CONTINUE

    def whole(self, body: bytes) -> Forward:
        if self.not_json and not self.local_error:
            err = GatewayError(
                "server_error", f"provider '{self.provider_name()}' answered with a non-JSON body, not a valid response"
            )
            return self.error_body(err, status=502)
        return super().whole(body)

    def good(self, body: bytes) -> Forward:
        assert self.provider_fmt is not None
        try:
            fmt = self.provider_fmt
            self.record.usage = (fmt.parse_embed_response(body) if self.embeddings else fmt.parse_response(body)).usage
        except GatewayError:
            # The client gets the provider's bytes as they are (a shape we do not know costs only our accounting),
            # unless they are not JSON at all: a truncated answer becomes a clear 502.
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError:
                err = GatewayError(
                    "server_error", f"provider '{self.provider_name()}' answered with truncated or invalid JSON"
                )
                return self.error_body(err, status=502)
        return CONTINUE


class PassThroughStream(Handler):
    """Same format, streamed: the provider's events go out as they come, decoded on the side for usage and time to
    first token; or through the format's filter when the gateway changed the request (e.g. asked for usage)."""

    __slots__ = ("_streamed", "decoder", "filter", "opts", "read_usage")

    def __init__(
        self,
        record: Record,
        client: WireFormat,
        provider: Any,
        opts: StreamOptions,
        filt: Filter | None,
        read: bool,
        fmt: ProviderFormat | None = None,
    ) -> None:
        super().__init__(record, client, fmt or client, provider)
        self.opts = opts
        self.filter = filt
        self.read_usage = read
        self.decoder: StreamDecoder | None = None
        self._streamed = False

    @property
    def streamed(self) -> bool:
        return self._streamed

    def headers(self, ctype: str) -> Forward:
        if self.status >= 400:
            self.record.error_type = type_for_status(self.status)
            if self.provider_fmt is not self.client:
                return CONTINUE  # the cloud's error, read whole and answered in the client's format
            return CONTINUE if "json" not in ctype else Forward(response_body_mode="NONE")
        if self.filter is None and not self.read_usage:
            return Forward(response_body_mode="NONE")
        self._streamed = True
        if self.filter is not None:
            media_type = getattr(self.filter, "media_type", None)  # a filter may change the framing (Bedrock's)
            framing = [("content-type", media_type)] if media_type and not ctype.startswith(media_type) else []
            return Forward(framing, remove_headers=["content-length"], response_body_mode="STREAMED")
        assert self.provider_fmt is not None
        self.decoder = self.provider_fmt.stream_decoder(self.opts)
        return Forward(response_body_mode="STREAMED")

    def on_body(self, body: bytes, end_of_stream: bool) -> Forward:
        if not self._streamed:
            return self.whole(body)
        filt = self.filter
        if filt is not None:
            out = filt.feed(body) if body else b""
            if end_of_stream:
                out += filt.close()
                self.record.usage = filt.usage
            return Forward(body=out)
        decoder = self.decoder
        assert decoder is not None
        events = decoder.feed(body) if body else []
        if end_of_stream:
            events.extend(decoder.close())
        for ev in events:
            self.account(ev)
        return CONTINUE


class Keeper(Protocol):
    """Keeps a translated answer for a stateful client format (``WireFormat.STATE``): the exchange makes one when the
    client asked for its answer to be kept."""

    def answer(self, resp: c.Response) -> None: ...

    def stream(self, encoder: StreamEncoder) -> None: ...


class Translate(Handler):
    """Another format, not streamed: the provider's answer parsed and rebuilt for the client."""

    __slots__ = ("keeper", "model", "request")

    def __init__(
        self,
        record: Record,
        client: WireFormat,
        provider_fmt: ProviderFormat,
        provider: Any,
        model: str,
        request: c.Request | None = None,
        keeper: Keeper | None = None,
    ) -> None:
        super().__init__(record, client, provider_fmt, provider)
        self.model = model  # the name the client asked for (answers carry it)
        self.request = request  # the parsed client request (answers of some formats repeat it)
        self.keeper = keeper

    def good(self, body: bytes) -> Forward:
        assert self.provider_fmt is not None
        try:
            resp = self.provider_fmt.parse_response(body)
        except GatewayError as err:
            return self.error_body(err, status=502)
        self.record.usage = resp.usage
        if not resp.created:
            resp.created = int(time.time())  # when the gateway answered, for formats that carry it
        out = self.client.build_response(resp, model=self.model, request=self.request)
        if self.keeper is not None:
            self.keeper.answer(resp)
        return Forward([("content-type", _JSON), ("content-length", str(len(out)))], body=out)


class TranslateCount(Handler):
    """A token count from a provider of another format, in the client's count shape."""

    __slots__ = ()

    def good(self, body: bytes) -> Forward:
        assert self.provider_fmt is not None
        try:
            tokens = self.provider_fmt.parse_count_response(body)
        except GatewayError as err:
            return self.error_body(err, status=502)
        out = self.client.build_count_response(tokens)
        return Forward([("content-type", _JSON), ("content-length", str(len(out)))], body=out)


class TranslateEmbed(Handler):
    """Embeddings from a provider of another format (or a cloud's variant of the client's), in the client's shape:
    its vectors encoded as the client asked (floats or base64)."""

    __slots__ = ("model", "request")

    def __init__(
        self,
        record: Record,
        client: WireFormat,
        provider_fmt: ProviderFormat,
        provider: Any,
        model: str,
        request: c.EmbedRequest,
    ) -> None:
        super().__init__(record, client, provider_fmt, provider)
        self.model = model
        self.request = request

    def good(self, body: bytes) -> Forward:
        assert self.provider_fmt is not None
        try:
            resp = self.provider_fmt.parse_embed_response(body)
        except GatewayError as err:
            return self.error_body(err, status=502)
        if len(resp.vectors) != len(self.request.inputs):
            wrong = GatewayError(
                "server_error",
                f"provider '{self.provider_name()}' answered {len(resp.vectors)} embeddings for "
                f"{len(self.request.inputs)} inputs",
            )
            return self.error_body(wrong, status=502)
        self.record.usage = resp.usage
        out = self.client.build_embed_response(resp, model=self.model, request=self.request)
        return Forward([("content-type", _JSON), ("content-length", str(len(out)))], body=out)


class TranslateStream(Translate):
    """Another format, streamed: each provider chunk decoded into canonical events and encoded for the client at once.
    A provider error inside the stream ends it with the client format's own in-stream error."""

    __slots__ = ("_streamed", "decoder", "encoder", "opts")

    def __init__(
        self,
        record: Record,
        client: WireFormat,
        provider_fmt: ProviderFormat,
        provider: Any,
        opts: StreamOptions,
        keeper: Keeper | None = None,
    ) -> None:
        super().__init__(record, client, provider_fmt, provider, opts.model, opts.request, keeper)
        self.opts = opts
        self.decoder: StreamDecoder | _Closed | None = None
        self.encoder: StreamEncoder | None = None
        self._streamed = False

    @property
    def streamed(self) -> bool:
        return self._streamed

    def headers(self, ctype: str) -> Forward:
        assert self.provider_fmt is not None
        if self.status >= 300 or not ctype.startswith(registry.stream_content_type(self.provider_fmt)):
            return CONTINUE  # an error (or a provider that did not stream): answered whole
        self.decoder = self.provider_fmt.stream_decoder(StreamOptions())
        self.opts.created = int(time.time())
        self.encoder = self.client.stream_encoder(self.opts)
        self._streamed = True
        return Forward(
            set_headers=[("content-type", self.encoder.media_type)],
            remove_headers=["content-length"],
            response_body_mode="STREAMED",
        )

    def on_body(self, body: bytes, end_of_stream: bool) -> Forward:
        if not self._streamed:
            return self.whole(body)
        decoder, encoder = self.decoder, self.encoder
        assert decoder is not None and encoder is not None
        out: list[bytes] = []
        events = decoder.feed(body) if body else []
        if end_of_stream:
            events.extend(decoder.close())
        for ev in events:
            if isinstance(ev, c.StreamError):
                self.record.error_type = ev.error.type
                out.append(encoder.error(ev.error))
                self.decoder = _Closed()
                break
            self.account(ev)
            out.append(encoder.encode(ev))
        if end_of_stream and not isinstance(self.decoder, _Closed):
            out.append(encoder.finish())
            if self.keeper is not None:
                self.keeper.stream(encoder)
        return Forward(body=b"".join(out))


class _Closed:
    """Decoder stand-in after a stream error: everything after it is dropped."""

    def feed(self, chunk: bytes) -> list[c.Event]:
        return []

    def close(self) -> list[c.Event]:
        return []


def _local_reply_text(body: bytes) -> str:
    """Envoy's own words from a local reply (wrapped by the bootstrap's ``local_reply_config`` body format)."""
    try:
        obj = orjson.loads(body)
        return str(obj["error"]["message"]).strip() or "no response"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or "no response"
