"""Zero-delay Anthropic SSE provider for the streaming scenarios: ``python sse_server.py --port N [--events 20]``.

HTTP/1.1 keep-alive on 127.0.0.1, reads the whole request body (``content-length``), answers every POST with one
Anthropic ``messages`` stream of exactly ``--events`` SSE events (message_start, content_block_start, N text deltas,
content_block_stop, message_delta, message_stop), each event written as its own chunked-encoding chunk and flushed, so
Envoy sees (up to its own read coalescing) one body piece per event. uvloop when installed, asyncio otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json


def anthropic_events(n: int, model: str = "claude-stream") -> list[bytes]:
    """``n`` (>= 6) Anthropic stream events, SSE-framed."""
    deltas = max(n - 5, 1)

    def ev(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    out = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 11, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for i in range(deltas):
        out.append(
            ev(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"word{i} "}},
            )
        )
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": deltas},
            },
        )
    )
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out


HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, events: list[bytes], gap: float) -> None:
    framed = [chunk(e) for e in events]
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            writer.write(HEAD + framed[0])
            await writer.drain()
            for piece in framed[1:]:
                if gap:
                    await asyncio.sleep(gap)
                else:
                    await asyncio.sleep(0)  # let the event loop send it as its own segment
                writer.write(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main_async(port: int, n: int, gap: float) -> None:
    events = anthropic_events(n)
    server = await asyncio.start_server(lambda r, w: handle(r, w, events, gap), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--gap-ms", type=float, default=0.0, help="pause between events (default: none)")
    args = ap.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.port, args.events, args.gap_ms / 1000))


if __name__ == "__main__":
    main()
