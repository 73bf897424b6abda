"""CPU per exchange through ``grpc_wire``'s framing, in process: ``python benchmarks/wire.py [-n 20000] [-r 5]``.

One ``grpc_wire.Connection`` on a fake transport (no socket, no event loop turn between frames) is fed what Envoy
sends for one ext_proc exchange, one ``data_received`` call per message as Envoy waits for each answer: a HEADERS
frame (the same bytes on every stream, as Envoy's, after the first), one DATA frame per ext_proc message, then the
half-close together with the connection WINDOW_UPDATE giving back what the answers used. Two services:

* ``echo``: answers each message with its own bytes: the transport alone (HTTP/2 frames, HPACK memo, gRPC
  prefixes, flow-control bookkeeping, the limits);
* ``extproc``: ``ExtProc`` without metrics or log line (``micro.py``'s messages, OpenAI -> Anthropic, 4 messages):
  the transport plus the service's own work, i.e. ``micro.py``'s figure plus framing.

``--baseline PATH`` loads another ``grpc_wire.py`` (e.g. ``git show COMMIT:extproc/transport/grpc_wire.py > f``)
and runs it interleaved with this checkout's, in the same process: before/after numbers under the same noise.
Each run prints microseconds of CPU (``process_time``) per exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class FakeTransport:
    """What ``Connection`` needs of an asyncio transport; counts what it is given."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class Echo:
    __slots__ = ()

    def message(self, data: bytes) -> bytes:
        return data

    def end(self) -> None:
        pass


def build(gw, messages: list[bytes], n: int, used: int) -> list[list[bytes]]:  # type: ignore[no-untyped-def]
    """Per exchange: [HEADERS + first message], [second message], ..., [END_STREAM + WINDOW_UPDATEs]."""
    import hpack

    enc = hpack.Encoder()
    headers = [
        (":method", "POST"), (":scheme", "http"), (":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
        (":authority", "extproc"), ("content-type", "application/grpc"), ("te", "trailers"),
        ("user-agent", "envoy/1.40"),
    ]  # fmt: skip
    out = []
    for i in range(n):
        sid = 2 * i + 1
        block = enc.encode(headers)
        chunks = []
        for k, m in enumerate(messages):
            data = gw.frame(gw.DATA, 0, sid, struct.pack(">BL", 0, len(m)) + m)
            chunks.append(gw.frame(gw.HEADERS, gw.END_HEADERS, sid, block) + data if k == 0 else data)
        # the half-close; the connection window the answers used comes back (Envoy reads them at once)
        chunks.append(gw.frame(gw.DATA, gw.END_STREAM, sid) + gw.frame(gw.WINDOW_UPDATE, 0, 0, struct.pack(">L", used)))
        out.append(chunks)
    return out


async def run(gw, service, msgs: list[bytes], n: int) -> float:  # type: ignore[no-untyped-def]
    conn = gw.Connection(gw.Server(service))
    transport = FakeTransport()
    conn.connection_made(transport)
    settings = struct.pack(">HL", 0x4, 16 * 1024 * 1024)
    conn.data_received(gw.PREFACE + gw.frame(gw.SETTINGS, 0, 0, settings) + gw.frame(gw.SETTINGS, gw.ACK, 0))
    conn.data_received(gw.frame(gw.WINDOW_UPDATE, 0, 0, struct.pack(">L", 64 * 1024 * 1024)))
    receive = conn.data_received
    window = conn.conn_send_window
    for chunks in build(gw, msgs, 1, 1):  # one exchange to learn how much send window its answers use
        for chunk in chunks:
            receive(chunk)
    used = window - conn.conn_send_window + 1
    feed = build(gw, msgs, n + 1, used)[1:]
    t0 = time.process_time()
    for chunks in feed:
        for chunk in chunks:
            receive(chunk)
    elapsed = time.process_time() - t0
    assert not conn.streams and not transport.closed, "the exchanges did not all end cleanly"
    return elapsed / n


def load(path: str):  # type: ignore[no-untyped-def]
    """A ``grpc_wire.py`` from anywhere (it imports only the standard library and ``hpack``), as its own module."""
    spec = importlib.util.spec_from_file_location(f"grpc_wire_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20000, help="exchanges per run (default: %(default)s)")
    ap.add_argument("-r", "--runs", type=int, default=5, help="runs per service and version (default: %(default)s)")
    ap.add_argument("--baseline", help="another grpc_wire.py to measure too, runs interleaved with this one's")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from micro import build_cases  # (it puts this checkout first on sys.path)

    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        os.environ.setdefault(k, "k")
    from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from extproc.core.config import load_config
    from extproc.core.exchange import Gateway
    from extproc.transport import grpc_wire
    from extproc.transport.servicer import ExtProc

    versions = {"this": grpc_wire}
    if args.baseline:
        versions["baseline"] = load(args.baseline)
    for name, module in versions.items():
        print(f"{name}: {Path(module.__file__).resolve()}")
    cfg_text = (HERE / "bench-config.yaml").read_text().replace("${SSE_PORT}", "9")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg_text)
    proc = ExtProc(Gateway(load_config(f.name)), None, None)
    msgs = [m.SerializeToString() for m in build_cases(pb, HeaderValue, HeaderMap)["OpenAI->Anthropic (4 msgs)"]]
    services = {"echo": lambda path: Echo(), "extproc": proc}
    for service_name, service in services.items():
        results: dict[str, list[float]] = {name: [] for name in versions}
        for module in versions.values():
            asyncio.run(run(module, service, msgs, 500))  # warm-up
        for _ in range(args.runs):  # interleaved: noise from other jobs hits both alike
            for name, module in versions.items():
                results[name].append(asyncio.run(run(module, service, msgs, args.n)) * 1e6)
        for name, values in results.items():
            runs = " ".join(f"{r:.1f}" for r in values)
            print(f"{service_name:<8} {name:<9} median {statistics.median(values):6.2f} us/exchange  (runs: {runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
