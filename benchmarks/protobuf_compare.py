"""Micro-benchmark: xds-protos (upb protobuf) vs envoy-data-plane (betterproto2 dataclasses).

Measures the three message operations the ext_proc hot path performs per request:

1. parse a ``ProcessingRequest`` carrying ``request_headers`` (14 headers in ``raw_value``, as Envoy 1.40 sends them);
   also "parse + read": parse, then read every header key and raw_value (what the service actually does);
2. build + serialize a ``ProcessingResponse`` with ``request_body.response`` carrying a 5-entry header_mutation,
   a ~2 KB body_mutation and ``clear_route_cache``;
3. parse a ``ProcessingRequest`` carrying a 2 KB ``request_body`` (and read the body).

The input bytes are produced once by xds-protos and the *same* bytes are fed to both libraries. Whichever library is
importable in the running interpreter is measured (xds-protos first, then envoy-data-plane), so run it once per venv:

    /tmp/venv/bin/python benchmarks/protobuf_compare.py --json
    /tmp/venv-edp/bin/python benchmarks/protobuf_compare.py --json --payloads payloads.json

or let ``--both`` do it (the xds interpreter writes the payloads, both interpreters measure, a markdown table is
printed):

    /tmp/venv/bin/python benchmarks/protobuf_compare.py --both --edp-python /tmp/venv-edp/bin/python

Each op is timed with ``timeit``: the iteration count comes from ``Timer.autorange()`` (>= 0.2 s per repeat), and the
best of 5 repeats is reported in microseconds per op. As a cross-check, each run also reports a digest of its decoded
fields and of the bytes it serialized in op 2; ``--both`` fails if the libraries disagree.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

REPEATS = 5

# Headers as Envoy 1.40 sends them to ext_proc: key + raw_value bytes, value left empty.
REQUEST_HEADERS: list[tuple[str, bytes]] = [
    (":authority", b"ai-gateway.internal:10000"),
    (":path", b"/openai/v1/chat/completions"),
    (":method", b"POST"),
    (":scheme", b"http"),
    ("content-type", b"application/json"),
    ("content-length", b"2048"),
    ("authorization", b"Bearer sk-proj-" + b"A1b2C3d4E5f6G7h8I9j0" * 3),
    ("user-agent", b"OpenAI/Python 2.8.1"),
    ("accept", b"application/json"),
    ("x-request-id", b"6f1c2f5e-9a4b-4e0c-8d7a-3b2f1e0d9c8b"),
    ("x-stainless-lang", b"python"),
    ("x-stainless-package-version", b"2.8.1"),
    ("x-stainless-os", b"Linux"),
    ("x-stainless-runtime-version", b"3.11.7"),
]

RESPONSE_SET_HEADERS: list[tuple[str, bytes]] = [
    (":path", b"/v1/messages"),
    ("content-type", b"application/json"),
    ("content-length", b"2048"),
    ("x-api-key", b"sk-ant-api03-" + b"Zz9Yy8Xx7Ww6Vv5Uu4Tt" * 3),
    ("anthropic-version", b"2023-06-01"),
]


def _json_body(size: int) -> bytes:
    """A deterministic chat-completions style JSON body of exactly ``size`` bytes."""
    head = b'{"model":"gpt-4o-mini","stream":false,"messages":[{"role":"system","content":"You are terse."},'
    head += b'{"role":"user","content":"'
    tail = b'"}],"temperature":0.2,"max_tokens":512}'
    filler = b"Summarise the following paragraph in one sentence. " * (size // 50 + 1)
    return head + filler[: size - len(head) - len(tail)] + tail


REQUEST_BODY = _json_body(2048)
RESPONSE_BODY = _json_body(2000)


# --------------------------------------------------------------------------------------------------------------------
# Library adapters. Each returns (name, versions, ops) where ops maps op name -> zero-arg callable.
# --------------------------------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def make_payloads_xds() -> dict[str, bytes]:
    from envoy.config.core.v3 import base_pb2 as base
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

    headers = ep.ProcessingRequest(
        request_headers=ep.HttpHeaders(
            headers=base.HeaderMap(headers=[base.HeaderValue(key=k, raw_value=v) for k, v in REQUEST_HEADERS]),
            end_of_stream=False,
        )
    ).SerializeToString()
    body = ep.ProcessingRequest(request_body=ep.HttpBody(body=REQUEST_BODY, end_of_stream=True)).SerializeToString()
    return {"request_headers": headers, "request_body": body}


def _xds_adapter(payloads: dict[str, bytes]) -> tuple[str, dict[str, Any], dict[str, Callable[[], Any]]]:
    from envoy.config.core.v3 import base_pb2 as base
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
    from google.protobuf.internal import api_implementation

    overwrite = base.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    hdr_bytes, body_bytes = payloads["request_headers"], payloads["request_body"]
    parse = ep.ProcessingRequest.FromString

    def parse_headers():
        return parse(hdr_bytes)

    def parse_headers_read():
        msg = parse(hdr_bytes)
        return [(h.key, h.raw_value) for h in msg.request_headers.headers.headers]

    def build_response():
        return ep.ProcessingResponse(
            request_body=ep.BodyResponse(
                response=ep.CommonResponse(
                    header_mutation=ep.HeaderMutation(
                        set_headers=[
                            base.HeaderValueOption(header=base.HeaderValue(key=k, raw_value=v), append_action=overwrite)
                            for k, v in RESPONSE_SET_HEADERS
                        ]
                    ),
                    body_mutation=ep.BodyMutation(body=RESPONSE_BODY),
                    clear_route_cache=True,
                )
            )
        ).SerializeToString()

    def parse_body():
        return parse(body_bytes).request_body.body

    versions = {
        "xds-protos": _version("xds-protos"),
        "protobuf": _version("protobuf"),
        "protobuf_backend": api_implementation.Type(),
    }
    ops = {
        "parse_headers": parse_headers,
        "parse_headers_read": parse_headers_read,
        "build_serialize_response": build_response,
        "parse_body_2k": parse_body,
    }
    return "xds-protos", versions, ops


def _edp_adapter(payloads: dict[str, bytes]) -> tuple[str, dict[str, Any], dict[str, Callable[[], Any]]]:
    try:  # envoy-data-plane >= 2 (betterproto2) ships under envoy_data_plane.envoy
        from envoy_data_plane.envoy.config.core import v3 as base
        from envoy_data_plane.envoy.service.ext_proc import v3 as ep
    except ImportError:  # envoy-data-plane < 2 (betterproto 1) shipped the top-level `envoy` package
        from envoy.config.core import v3 as base
        from envoy.service.ext_proc import v3 as ep

    overwrite = base.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    hdr_bytes, body_bytes = payloads["request_headers"], payloads["request_body"]
    parse = ep.ProcessingRequest.parse

    def parse_headers():
        return parse(hdr_bytes)

    def parse_headers_read():
        msg = parse(hdr_bytes)
        return [(h.key, h.raw_value) for h in msg.request_headers.headers.headers]

    def build_response():
        return bytes(
            ep.ProcessingResponse(
                request_body=ep.BodyResponse(
                    response=ep.CommonResponse(
                        header_mutation=ep.HeaderMutation(
                            set_headers=[
                                base.HeaderValueOption(
                                    header=base.HeaderValue(key=k, raw_value=v), append_action=overwrite
                                )
                                for k, v in RESPONSE_SET_HEADERS
                            ]
                        ),
                        body_mutation=ep.BodyMutation(body=RESPONSE_BODY),
                        clear_route_cache=True,
                    )
                )
            )
        )

    def parse_body():
        return parse(body_bytes).request_body.body

    versions = {
        "envoy-data-plane": _version("envoy-data-plane") or _version("envoy_data_plane"),
        "betterproto2": _version("betterproto2"),
        "betterproto": _version("betterproto"),
        "pydantic": _version("pydantic"),
    }
    ops = {
        "parse_headers": parse_headers,
        "parse_headers_read": parse_headers_read,
        "build_serialize_response": build_response,
        "parse_body_2k": parse_body,
    }
    return "envoy-data-plane", versions, ops


def _xds_available() -> bool:
    try:
        from envoy.service.ext_proc.v3 import external_processor_pb2  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------------------


def _digest(ops: dict[str, Callable[[], Any]]) -> dict[str, str]:
    """What each op produced, so --both can verify both libraries decoded/encoded the same thing."""
    headers = ops["parse_headers_read"]()
    return {
        "decoded_headers_sha256": hashlib.sha256(repr(headers).encode()).hexdigest()[:16],
        "decoded_body_sha256": hashlib.sha256(ops["parse_body_2k"]()).hexdigest()[:16],
        "response_bytes_sha256": hashlib.sha256(ops["build_serialize_response"]()).hexdigest()[:16],
        "response_bytes_len": str(len(ops["build_serialize_response"]())),
    }


def measure(payloads: dict[str, bytes]) -> dict[str, Any]:
    name, versions, ops = (_xds_adapter if _xds_available() else _edp_adapter)(payloads)
    results = {}
    for op, fn in ops.items():
        timer = timeit.Timer(fn)
        number, _ = timer.autorange()
        best = min(timer.repeat(repeat=REPEATS, number=number))
        results[op] = {"us_per_op": round(best / number * 1e6, 3), "iterations": number, "repeats": REPEATS}
    return {
        "library": name,
        "versions": versions,
        "python": platform.python_version(),
        "executable": sys.executable,
        "payload_sizes": {k: len(v) for k, v in payloads.items()},
        "check": _digest(ops),
        "results": results,
    }


def _load_payloads(path: str | None) -> dict[str, bytes]:
    if path:
        with open(path) as f:
            return {k: base64.b64decode(v) for k, v in json.load(f).items()}
    if _xds_available():
        return make_payloads_xds()
    sys.exit("xds-protos is not importable here: pass --payloads FILE (written by the xds run with --write-payloads)")


OP_LABELS = {
    "parse_headers": "1. parse ProcessingRequest{request_headers} (14 hdrs)",
    "parse_headers_read": "1b. parse + read all header keys/raw_values",
    "build_serialize_response": "2. build + serialize ProcessingResponse (5 set_headers, 2 KB body)",
    "parse_body_2k": "3. parse ProcessingRequest{request_body} (2 KB)",
}


def _run_child(python: str, payload_file: str) -> dict[str, Any]:
    out = subprocess.run(
        [python, os.path.abspath(__file__), "--json", "--payloads", payload_file],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def run_both(xds_python: str, edp_python: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        payload_file = os.path.join(tmp, "payloads.json")
        subprocess.run([xds_python, os.path.abspath(__file__), "--write-payloads", payload_file], check=True)
        a = _run_child(xds_python, payload_file)
        b = _run_child(edp_python, payload_file)
    if a["library"] != "xds-protos" or b["library"] != "envoy-data-plane":
        sys.exit(f"wrong interpreters: --xds-python measured {a['library']}, --edp-python measured {b['library']}")
    if a["check"] != b["check"]:
        sys.exit(f"libraries disagree on decoded/encoded content:\n{a['check']}\n{b['check']}")

    va = ", ".join(f"{k} {v}" for k, v in a["versions"].items() if v)
    vb = ", ".join(f"{k} {v}" for k, v in b["versions"].items() if v)
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- machine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()} {platform.release()})",
        f"- python: {a['python']} (xds) / {b['python']} (edp)",
        f"- A: {va}",
        f"- B: {vb}",
        f"- payloads: {a['payload_sizes']['request_headers']} B headers request, "
        f"{a['payload_sizes']['request_body']} B body request; response {a['check']['response_bytes_len']} B "
        "(byte-identical from both libraries)",
        f"- timeit: best of {REPEATS} repeats, autorange iteration counts, µs per op (lower is better)",
        "",
        "| operation | A: xds-protos (µs) | B: envoy-data-plane (µs) | B / A |",
        "|---|---:|---:|---:|",
    ]
    for op, label in OP_LABELS.items():
        ta, tb = a["results"][op]["us_per_op"], b["results"][op]["us_per_op"]
        lines.append(f"| {label} | {ta:.2f} | {tb:.2f} | {tb / ta:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print this interpreter's results as JSON")
    ap.add_argument("--both", action="store_true", help="run under both interpreters and print a markdown table")
    ap.add_argument("--xds-python", default=sys.executable, help="interpreter with xds-protos (default: this one)")
    ap.add_argument("--edp-python", default="/tmp/venv-edp/bin/python", help="interpreter with envoy-data-plane")
    ap.add_argument("--payloads", help="JSON file of base64 payloads (as written by --write-payloads)")
    ap.add_argument("--write-payloads", metavar="FILE", help="generate payloads with xds-protos, write them, exit")
    args = ap.parse_args()

    if args.write_payloads:
        payloads = make_payloads_xds()
        with open(args.write_payloads, "w") as f:
            json.dump({k: base64.b64encode(v).decode() for k, v in payloads.items()}, f)
        return
    if args.both:
        print(run_both(args.xds_python, args.edp_python))
        return

    report = measure(_load_payloads(args.payloads))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['library']} {report['versions']} python {report['python']}")
        for op, label in OP_LABELS.items():
            print(f"  {label:<72} {report['results'][op]['us_per_op']:>10.2f} µs")


if __name__ == "__main__":
    main()
