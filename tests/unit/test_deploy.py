"""Static and loopback checks of the three deployments (no Docker engine, no cluster needed).

- Every Envoy configuration docker-compose, Kubernetes and Istio rely on passes ``envoy --mode validate`` (Istio's
  EnvoyFilter patches applied to an Istio-shaped bootstrap); the generated files equal a fresh render.
- docker-compose.yml validates against the compose specification; the Kubernetes manifests against Kubernetes'
  schemas (strict: unknown fields fail); the Istio resources against Istio's CRD models (unknown fields fail).
- The container commands are the ones these tests run: the Dockerfile's ENTRYPOINT+CMD, compose's commands and the
  Kubernetes args start the real service and Envoy here, on loopback, and the health checks and probes pass.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.istio.networking import v1 as istio_v1
from cloudcoil.models.istio.networking import v1alpha3 as istio_v1alpha3

from extproc.core.config import load_config
from extproc.core.contract import ROUTE_HEADER
from extproc.ops.envoy_config import ext_proc_filter
from extproc.ops.launcher import find_envoy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "ai-gateway"
ISTIO_EXTPROC_CLUSTER = f"outbound|50051||ai-gateway-extproc.{NAMESPACE}.svc.cluster.local"
SERVICE_COMMAND = ["ai-gateway", "extproc", "--extproc-listen", "0.0.0.0:50051"]
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())  # native sidecars need 1.29
ISTIO_MODELS = {
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): istio_v1alpha3.EnvoyFilter,
    ("networking.istio.io/v1", "ServiceEntry"): istio_v1.ServiceEntry,
    ("networking.istio.io/v1", "DestinationRule"): istio_v1.DestinationRule,
    ("networking.istio.io/v1", "VirtualService"): istio_v1.VirtualService,
    ("networking.istio.io/v1", "Gateway"): istio_v1.Gateway,
}


# ------------------------------------------------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def envoy_bin() -> str:
    return find_envoy(None)


def envoy_validate(bootstrap: dict[str, Any] | Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = bootstrap if isinstance(bootstrap, Path) else Path(tmp, "envoy.yaml")
        if not isinstance(bootstrap, Path):
            path.write_text(json.dumps(bootstrap))
        done = subprocess.run(
            [envoy_bin(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id", "--log-level", "error"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, f"envoy --mode validate failed:\n{done.stdout}\n{done.stderr}"


def local_argv(argv: list[str]) -> list[str]:
    """The ``ai-gateway`` console script as this interpreter runs it (``python -m extproc`` is the same entry)."""
    assert argv[0] == "ai-gateway", argv
    return [sys.executable, "-m", "extproc", *argv[1:]]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(extra)
    return env


def replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or clean_env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(
    what: str, ready: Any, procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead or ready():
            if not dead:
                return
            break
        time.sleep(0.1)
    text = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    pytest.fail(f"{what} not ready:\n{text}")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def dockerfile() -> tuple[list[str], str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return text.replace("\\\n", " ").splitlines(), text


def dockerfile_json(instruction: str) -> list[str]:
    lines, _ = dockerfile()
    found = [json.loads(line.split(None, 1)[1]) for line in lines if line.startswith(instruction + " ")]
    assert len(found) == 1, f"one exec-form {instruction} expected"
    return found[-1]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def compose_render_argv() -> tuple[list[str], str]:
    """The ``ai-gateway envoy-config`` command the compose render service runs, and the file it writes."""
    svc = compose()["services"]["envoy-config"]
    assert svc["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = svc["command"]
    steps = [s.strip() for s in script.split(";") if s.strip()]
    render = next(s for s in steps if s.startswith("ai-gateway envoy-config"))
    cmd, _, target = render.partition(">")
    mv = shlex.split(steps[-1])
    assert mv[0] == "mv" and mv[1] == target.strip(), "the rendered file is moved into place atomically"
    return shlex.split(cmd), mv[2]


def packaged_envoy_minor() -> str:
    out = subprocess.run([envoy_bin(), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"/(\d+)\.(\d+)\.\d+/", out)
    assert match, out
    return f"{match.group(1)}.{match.group(2)}"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """What ``kubectl apply -k`` applies, without a cluster: resources, namespace, generated ConfigMaps (no hash)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        docs += load_docs(directory / res)
    for gen in kust.get("configMapGenerator", []):
        data = {f: (directory / f).read_text(encoding="utf-8") for f in gen["files"]}
        meta = {"name": gen["name"], **({"namespace": gen["namespace"]} if "namespace" in gen else {})}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for doc in docs:
        if kust.get("namespace") and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = kust["namespace"]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def k8s_validate(doc: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {where}: {exc}")


def istio_validate(doc: dict[str, Any]) -> None:
    """Istio's CRD models (generated from its OpenAPI schemas): types and enums checked; unknown fields, which the
    models ignore, are caught by comparing the round trip."""
    model = ISTIO_MODELS[(doc["apiVersion"], doc["kind"])]
    back = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert back == doc, f"{doc['kind']}/{doc['metadata']['name']}: fields Istio does not know"


# ---------------------------------------------------------------------------------------------- generated files
def test_generated_files_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "render.py"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, f"run `python deploy/render.py`: {done.stdout}{done.stderr}"


# ------------------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_runs_the_service_as_the_tests_do() -> None:
    lines, text = dockerfile()
    assert dockerfile_json("ENTRYPOINT") + dockerfile_json("CMD") == SERVICE_COMMAND
    assert sum(1 for line in lines if line.startswith("FROM ")) >= 2, "multi-stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.M), "slim Python base"
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and not user[-1].startswith(("0", "root")), "runs as a non-root user"
    assert re.search(r"^HEALTHCHECK .*CMD \[\"ai-gateway-healthcheck\"\]", text, re.M)
    # Runtime stage gets only runtime files: the virtualenv, the default config, the health check.
    runtime = text[text.index("AS runtime") :]
    copies = re.findall(r"^COPY (?:--\S+ )*(\S+) ", runtime, re.M)
    assert copies == ["/opt/ai-gateway", "config/proxy-config.yaml", "deploy/healthcheck.py"]
    # Every file the build copies from the context passes .dockerignore's allow-list.
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"]
    for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M):
        for path in src.split():
            assert path in allowed, f"{path} is excluded by .dockerignore"
            assert (ROOT / path).exists()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'ai-gateway = "extproc.ops.cli:main"' in pyproject
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)  # type: ignore[union-attr]
    assert compose()["services"]["extproc"]["image"] == f"ai-gateway:{version}"


# -------------------------------------------------------------------------------------------- docker-compose
def test_compose_file_follows_the_compose_spec() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_topology() -> None:
    services = compose()["services"]
    extproc, envoy, render = services["extproc"], services["envoy"], services["envoy-config"]
    assert "entrypoint" not in extproc and ["ai-gateway", *extproc["command"]] == SERVICE_COMMAND
    assert envoy["image"] in (f"envoyproxy/envoy:v{packaged_envoy_minor()}-latest",) or envoy["image"].startswith(
        f"envoyproxy/envoy:v{packaged_envoy_minor()}."
    ), "the official image, same version as the packaged Envoy"
    assert "8080:8080" in envoy["ports"]
    assert envoy["depends_on"] == {
        "envoy-config": {"condition": "service_completed_successfully"},
        "extproc": {"condition": "service_healthy"},
    }
    for svc in (extproc, envoy):
        assert svc["restart"] == "unless-stopped" and svc["healthcheck"]["test"][0] == "CMD"
    for svc in (extproc, render):
        assert svc["env_file"] == [{"path": ".env", "required": True}]
        assert "./config:/app/config:ro" in svc["volumes"]
    # Envoy reads what the render service wrote.
    argv, target = compose_render_argv()
    volume_dir = next(v.split(":")[1] for v in render["volumes"] if v.startswith("envoy-config:"))
    envoy_dir = next(v.split(":")[1] for v in envoy["volumes"] if v.startswith("envoy-config:"))
    assert Path(target).parent == Path(volume_dir)
    assert envoy["command"][:3] == ["envoy", "-c", str(Path(envoy_dir, Path(target).name))]
    assert argv[:2] == ["ai-gateway", "envoy-config"]
    assert argv[argv.index("--listen") + 1] == ":8080"
    assert argv[argv.index("--extproc-listen") + 1] == "extproc:50051"
    # The healthcheck runs the image's health check against the address the command listens on.
    assert extproc["healthcheck"]["test"] == ["CMD", "ai-gateway-healthcheck", "--address", "127.0.0.1:50051"]


def test_compose_envoy_config_validates(tmp_path: Path) -> None:
    argv, _ = compose_render_argv()
    done = subprocess.run(
        [*local_argv(argv), "--env-file", os.devnull], capture_output=True, text=True, cwd=ROOT, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    bootstrap = yaml.safe_load(done.stdout)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    addr = clusters["extproc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr["socket_address"] == {"address": "extproc", "port_value": 50051}
    assert clusters["extproc"]["type"] == "STRICT_DNS"
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9901}
    envoy_validate(bootstrap)


def test_compose_commands_serve_on_loopback(tmp_path: Path) -> None:
    """The compose service's command and the render command (addresses moved to free loopback ports) run the real
    service and Envoy; both compose health checks pass against them."""
    services = compose()["services"]
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    service_cmd = replace_flag(
        ["ai-gateway", *services["extproc"]["command"]], "--extproc-listen", f"127.0.0.1:{grpc_port}"
    )
    argv, _ = compose_render_argv()
    argv = replace_flag(argv, "--extproc-listen", f"127.0.0.1:{grpc_port}")
    argv = replace_flag(replace_flag(argv, "--listen", f"127.0.0.1:{http_port}"), "--admin", f"127.0.0.1:{admin_port}")
    bootstrap = tmp_path / "envoy.yaml"
    rendered = subprocess.run(
        [*local_argv(argv), "--env-file", os.devnull], capture_output=True, text=True, cwd=ROOT, env=clean_env()
    )
    assert rendered.returncode == 0, rendered.stderr
    bootstrap.write_text(rendered.stdout)
    envoy_cmd = [envoy_bin(), *replace_flag(services["envoy"]["command"], "-c", str(bootstrap))[1:]]
    logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
    with running([*local_argv(service_cmd), "--env-file", os.devnull], logs[0]) as svc:
        health = services["extproc"]["healthcheck"]["test"][1:]
        check = [
            sys.executable,
            str(DEPLOY / "healthcheck.py"),
            *replace_flag(health[1:], "--address", f"127.0.0.1:{grpc_port}"),
        ]
        wait_for("extproc", lambda: subprocess.run(check, capture_output=True).returncode == 0, [svc], logs[:1])
        with running([*envoy_cmd, "--use-dynamic-base-id"], logs[1]) as envoy:
            url = f"http://127.0.0.1:{http_port}/health"
            wait_for("envoy", lambda: http_status(url) == 200, [svc, envoy], logs)
            probe = services["envoy"]["healthcheck"]["test"][1:]
            probe = [a.replace("/127.0.0.1/8080", f"/127.0.0.1/{http_port}") for a in probe]
            assert subprocess.run(probe, capture_output=True, timeout=10).returncode == 0, "envoy healthcheck"


# -------------------------------------------------------------------------------------------------- Kubernetes
def k8s_docs() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "k8s")


def k8s_pod() -> dict[str, Any]:
    (deploy,) = by_kind(k8s_docs(), "Deployment", "ai-gateway")
    return deploy["spec"]["template"]["spec"]


def test_k8s_manifests_validate() -> None:
    docs = k8s_docs() + load_docs(DEPLOY / "k8s" / "secret.example.yaml")
    assert {d["kind"] for d in docs} >= {
        "Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret",
    }  # fmt: skip
    for doc in docs:
        k8s_validate(doc)
    if shutil.which("kubectl"):  # the real kustomize, where there is one
        built = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
        names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built.stdout)}
        assert {k for k, _ in names} == {d["kind"] for d in k8s_docs()}


def test_k8s_sidecar_wiring() -> None:
    docs = k8s_docs()
    pod = k8s_pod()
    (extproc,) = pod["initContainers"]
    (envoy,) = pod["containers"]
    assert extproc["restartPolicy"] == "Always", "a native sidecar: up before Envoy, down after it"
    assert extproc["image"].startswith("ai-gateway:") and envoy["image"] == compose()["services"]["envoy"]["image"]
    # The same command as the image's, with the socket and the mounted config.
    assert ["ai-gateway", *extproc["args"][:2]] == SERVICE_COMMAND[:3]
    socket_addr = extproc["args"][extproc["args"].index("--extproc-listen") + 1]
    assert socket_addr.startswith("unix:")
    (cm,) = by_kind(docs, "ConfigMap", "ai-gateway-config")
    bootstrap = yaml.safe_load(cm["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    addr = clusters["extproc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr == {"pipe": {"path": socket_addr[len("unix:") :]}}
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1", "admin stays in the pod"
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (extproc, envoy)}
    assert mounts["extproc"]["socket"] == mounts["envoy"]["socket"] == str(Path(socket_addr[5:]).parent)
    config_dir = mounts["envoy"]["config"]
    assert envoy["args"][:2] == ["-c", f"{config_dir}/envoy.yaml"]
    assert extproc["args"][extproc["args"].index("--config") + 1] == f"{config_dir}/proxy-config.yaml"
    assert {v["name"]: v for v in pod["volumes"]}["config"]["configMap"]["name"] == cm["metadata"]["name"]
    (secret,) = load_docs(DEPLOY / "k8s" / "secret.example.yaml")
    assert extproc["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    # Probes, requests, scaling.
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/health"
    for c in (extproc, envoy):
        assert c["livenessProbe"] and c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    labels = by_kind(docs, "Deployment", "ai-gateway")[0]["spec"]["template"]["metadata"]["labels"]
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ai-gateway" and hpa["spec"]["minReplicas"] >= 2
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (svc,) = by_kind(docs, "Service")
    assert svc["spec"]["selector"].items() <= labels.items()


def test_k8s_envoy_config_validates() -> None:
    (cm,) = by_kind(k8s_docs(), "ConfigMap", "ai-gateway-config")
    envoy_validate(yaml.safe_load(cm["data"]["envoy.yaml"]))
    load_config(DEPLOY / "k8s" / "proxy-config.yaml", env={})


def test_k8s_pod_serves_on_loopback(tmp_path: Path) -> None:
    """The pod's two containers as the manifest runs them (socket, config dir and ports moved into a temp dir):
    the startup probe, the readiness probe through Envoy, and the preStop drain all work."""
    pod = k8s_pod()
    (extproc,) = pod["initContainers"]
    (envoy,) = pod["containers"]
    (cm,) = by_kind(k8s_docs(), "ConfigMap", "ai-gateway-config")
    config_dir, sock = tmp_path / "config", tmp_path / "extproc.sock"
    config_dir.mkdir()
    http_port, admin_port = free_port(), free_port()
    bootstrap = yaml.safe_load(cm["data"]["envoy.yaml"])
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"] = {
        "address": "127.0.0.1",
        "port_value": http_port,
    }
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    clusters["extproc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
        "pipe": {"path": str(sock)}
    }
    (config_dir / "envoy.yaml").write_text(json.dumps(bootstrap))
    (config_dir / "proxy-config.yaml").write_text(cm["data"]["proxy-config.yaml"])

    def moved(arg: str) -> str:
        return arg.replace("/run/ai-gateway/extproc.sock", str(sock)).replace("/etc/ai-gateway", str(config_dir))

    service_cmd = [moved(a) for a in ["ai-gateway", *extproc["args"]]]
    envoy_cmd = [envoy_bin(), *[moved(a) for a in envoy["args"]], "--use-dynamic-base-id"]
    startup = [moved(a) for a in extproc["startupProbe"]["exec"]["command"]]
    startup = [sys.executable, str(DEPLOY / "healthcheck.py"), *startup[1:]]
    logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
    with running([*local_argv(service_cmd), "--env-file", os.devnull], logs[0]) as svc:
        wait_for("extproc", lambda: subprocess.run(startup, capture_output=True).returncode == 0, [svc], logs[:1])
        live = [
            sys.executable,
            str(DEPLOY / "healthcheck.py"),
            *[moved(a) for a in extproc["livenessProbe"]["exec"]["command"][1:]],
        ]
        assert subprocess.run(live, capture_output=True).returncode == 0
        with running(envoy_cmd, logs[1]) as proxy:
            ready = f"http://127.0.0.1:{http_port}{envoy['readinessProbe']['httpGet']['path']}"
            wait_for("envoy", lambda: http_status(ready) == 200, [svc, proxy], logs)
            liveness = [
                a.replace("/127.0.0.1/9901", f"/127.0.0.1/{admin_port}")
                for a in envoy["livenessProbe"]["exec"]["command"]
            ]
            assert subprocess.run(liveness, capture_output=True, timeout=10).returncode == 0
            pre_stop = [
                a.replace("/127.0.0.1/9901", f"/127.0.0.1/{admin_port}").replace("sleep 5", "sleep 0")
                for a in envoy["lifecycle"]["preStop"]["exec"]["command"]
            ]
            started = time.monotonic()
            done = subprocess.run(pre_stop, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            assert time.monotonic() - started < 10, "no request in flight: the drain wait ends at once"
            assert proxy.poll() is None, "preStop drains, SIGTERM stops"


# ------------------------------------------------------------------------------------------------------ Istio
def istio_docs() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "istio") + load_docs(DEPLOY / "istio" / "envoyfilter-sidecar.yaml")


def test_istio_resources_validate() -> None:
    docs = istio_docs()
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"EnvoyFilter", "ServiceEntry", "DestinationRule", "VirtualService", "Gateway", "Deployment"}
    for doc in docs:
        if doc["apiVersion"].startswith("networking.istio.io/"):
            istio_validate(doc)
        else:
            k8s_validate(doc)


def test_istio_envoyfilters_embed_the_ext_proc_filter() -> None:
    expected = ext_proc_filter(cluster_name=ISTIO_EXTPROC_CLUSTER)
    filters = by_kind(istio_docs(), "EnvoyFilter")
    assert len(filters) == 2
    for ef in filters:
        (insert,) = [p for p in ef["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
        assert insert["patch"]["operation"] == "INSERT_BEFORE"
        assert insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
        value = dict(insert["patch"]["value"])
        disabled = value.pop("disabled", False)
        assert value == json.loads(json.dumps(expected)), "the same filter config as the bootstrap's"
        assert disabled == (insert["match"]["context"] == "SIDECAR_OUTBOUND")
    # The cluster name is Istio's name for the gRPC port of the service's Service.
    (svc,) = by_kind(istio_docs(), "Service", "ai-gateway-extproc")
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["appProtocol"], svc["metadata"]["namespace"]) == (50051, "grpc", NAMESPACE)
    (gateway_ef,) = [f for f in filters if f["metadata"]["name"] == "ai-gateway-ext-proc"]
    (gateway,) = by_kind(istio_docs(), "Gateway")
    (gw_deploy,) = by_kind(istio_docs(), "Deployment", "ai-gateway")
    selector = gateway_ef["spec"]["workloadSelector"]["labels"]
    assert selector == gateway["spec"]["selector"]
    assert selector.items() <= gw_deploy["spec"]["template"]["metadata"]["labels"].items()


def test_istio_routing_matches_the_providers() -> None:
    docs = istio_docs()
    cfg = load_config(DEPLOY / "istio" / "proxy-config.yaml", env={})
    providers = {p.name: p for p in cfg.used_providers()}
    entries = {h: se for se in by_kind(docs, "ServiceEntry") for h in se["spec"]["hosts"]}
    rules = {dr["spec"]["host"]: dr for dr in by_kind(docs, "DestinationRule")}
    for vs in by_kind(docs, "VirtualService"):
        routed = set()
        for route in vs["spec"]["http"]:
            if "match" not in route:
                continue
            (match,) = route["match"]
            name = match["headers"][ROUTE_HEADER]["exact"]
            routed.add(name)
            p = providers[name]
            (dest,) = route["route"]
            host, port = dest["destination"]["host"], dest["destination"]["port"]["number"]
            assert host == p.upstream.host and route["rewrite"]["authority"] == p.upstream.authority
            se_port = {sp["number"]: sp for sp in entries[host]["spec"]["ports"]}[port]
            assert se_port["protocol"] == "HTTP" and se_port.get("targetPort", port) == p.upstream.port
            if p.upstream.tls:
                (setting,) = rules[host]["spec"]["trafficPolicy"]["portLevelSettings"]
                assert setting["port"]["number"] == port
                assert setting["tls"] == {"mode": "SIMPLE", "sni": host, "subjectAltNames": [host]}
        assert routed == set(providers), f"{vs['metadata']['name']} routes every provider on {ROUTE_HEADER}"


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def istio_bootstrap(envoyfilter: dict[str, Any], context: str) -> dict[str, Any]:
    """A bootstrap shaped like what istiod gives the proxy (an HTTP listener on 8080 with only the router, Istio's
    cluster names, routes from the VirtualService, TLS from the DestinationRules), with the EnvoyFilter's patches
    applied the way Istio applies them."""
    docs = istio_docs()
    gateway_host = f"ai-gateway.{NAMESPACE}.svc.cluster.local"
    (vs,) = [
        v for v in by_kind(docs, "VirtualService") if (v["spec"]["gateways"] == ["mesh"]) == (context != "GATEWAY")
    ]
    routes = []
    for r in vs["spec"]["http"]:
        match: dict[str, Any] = {"prefix": "/"}
        if "match" in r:
            ((name, cond),) = r["match"][0]["headers"].items()
            match["headers"] = [{"name": name, "string_match": {"exact": cond["exact"]}}]
        if "directResponse" in r:
            action = {
                "direct_response": {
                    "status": r["directResponse"]["status"],
                    "body": {"inline_string": r["directResponse"]["body"]["string"]},
                }
            }
        else:
            dest = r["route"][0]["destination"]
            action = {"route": {"cluster": f"outbound|{dest['port']['number']}||{dest['host']}"}}
            if "rewrite" in r:
                action["route"]["host_rewrite_literal"] = r["rewrite"]["authority"]
            if "timeout" in r:
                action["route"]["timeout"] = r["timeout"]
        routes.append({"name": r["name"], "match": match, **action})
    vhost_name = "*:8080" if context == "GATEWAY" else f"{gateway_host}:8080"
    vhost = {"name": vhost_name, "domains": ["*"], "routes": routes}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "outbound_0.0.0.0_8080",
        "route_config": {"name": "http.8080", "virtual_hosts": [vhost]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    listener = {
        "name": "0.0.0.0_8080",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    h2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }

    def cluster(name: str, host: str, port: int, **extra: Any) -> dict[str, Any]:
        ep = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        return {
            "name": name,
            "type": "STRICT_DNS",
            "connect_timeout": "10s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [ep]}]},
            **extra,
        }

    clusters = {
        ISTIO_EXTPROC_CLUSTER: cluster(
            ISTIO_EXTPROC_CLUSTER,
            f"ai-gateway-extproc.{NAMESPACE}.svc.cluster.local",
            50051,
            typed_extension_protocol_options=h2,
        )
    }
    clusters[f"outbound|8080||{gateway_host}"] = cluster(f"outbound|8080||{gateway_host}", gateway_host, 8080)
    rules = {dr["spec"]["host"]: dr for dr in by_kind(docs, "DestinationRule")}
    for se in by_kind(docs, "ServiceEntry"):
        (host,) = se["spec"]["hosts"]
        for port in se["spec"]["ports"]:
            if port["protocol"] != "HTTP":
                continue
            name = f"outbound|{port['number']}||{host}"
            c = cluster(name, host, port.get("targetPort", port["number"]))
            for setting in rules.get(host, {}).get("spec", {}).get("trafficPolicy", {}).get("portLevelSettings", []):
                if setting["port"]["number"] == port["number"]:
                    tls = setting["tls"]
                    assert tls["mode"] == "SIMPLE"
                    c["transport_socket"] = {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                            "sni": tls["sni"],
                            "common_tls_context": {
                                "validation_context": {
                                    "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
                                    "match_typed_subject_alt_names": [
                                        {"san_type": "DNS", "matcher": {"exact": san}} for san in tls["subjectAltNames"]
                                    ],
                                }
                            },
                        },
                    }
            clusters[name] = c

    for patch in envoyfilter["spec"]["configPatches"]:
        assert patch["match"]["context"] == context
        kind, op, value = patch["applyTo"], patch["patch"]["operation"], patch["patch"]["value"]
        if kind == "HTTP_FILTER":
            assert op == "INSERT_BEFORE"
            sub = patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
            names = [f["name"] for f in hcm["http_filters"]]
            hcm["http_filters"].insert(names.index(sub), copy.deepcopy(value))
        elif kind == "NETWORK_FILTER":
            assert op == "MERGE" and value["typed_config"]["@type"] == hcm["@type"]
            deep_merge(hcm, {k: v for k, v in value["typed_config"].items() if k != "@type"})
        elif kind == "LISTENER":
            assert op == "MERGE"
            port = patch["match"].get("listener", {}).get("portNumber")
            assert port in (None, 8080)
            deep_merge(listener, value)
        elif kind == "CLUSTER":
            assert op == "MERGE"
            name = f"outbound|{patch['match']['cluster']['portNumber']}||{patch['match']['cluster']['service']}"
            assert name in clusters, f"EnvoyFilter patches a cluster no resource creates: {name}"
            deep_merge(clusters[name], value)
        elif kind == "VIRTUAL_HOST":
            assert op == "MERGE" and patch["match"]["routeConfiguration"]["vhost"]["name"] == vhost["name"]
            deep_merge(vhost, value)
        else:
            pytest.fail(f"unexpected patch {kind}")
    return {
        "node": {"id": "istio-proxy", "cluster": "ai-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {"listeners": [listener], "clusters": list(clusters.values())},
    }


@pytest.mark.parametrize(
    "name,context",
    [("ai-gateway-ext-proc", "GATEWAY"), (f"ai-gateway-ext-proc-sidecar-{NAMESPACE}", "SIDECAR_OUTBOUND")],
)
def test_istio_envoyfilter_in_a_bootstrap_validates(name: str, context: str) -> None:
    (ef,) = by_kind(istio_docs(), "EnvoyFilter", name)
    bootstrap = istio_bootstrap(ef, context)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    # The bootstrap's local-reply mappers (Envoy's own connect-failure/timeout replies tagged for the service); in
    # the sidecar variant each is narrowed to requests the service routed, so the workload's other traffic keeps
    # Envoy's own replies.
    (cm,) = by_kind(k8s_docs(), "ConfigMap", "ai-gateway-config")
    k8s = yaml.safe_load(cm["data"]["envoy.yaml"])["static_resources"]["listeners"][0]
    expected = k8s["filter_chains"][0]["filters"][0]["typed_config"]["local_reply_config"]["mappers"]
    mappers = hcm["local_reply_config"]["mappers"]
    assert any(h["header"]["key"] == "x-ai-gateway-error" for m in mappers for h in m.get("headers_to_add", []))
    if context == "GATEWAY":
        assert mappers == expected
    else:
        routed = {"header_filter": {"header": {"name": ROUTE_HEADER, "present_match": True}}}
        assert [m["filter"]["and_filter"]["filters"] for m in mappers] == [[e["filter"], routed] for e in expected]
    envoy_validate(bootstrap)


@pytest.mark.parametrize(
    "name,context",
    [("ai-gateway-ext-proc", "GATEWAY"), (f"ai-gateway-ext-proc-sidecar-{NAMESPACE}", "SIDECAR_OUTBOUND")],
)
def test_istio_envoyfilter_serves_on_loopback(tmp_path: Path, name: str, context: str) -> None:
    """The patched Istio-shaped proxy, with the service's cluster pointed at a real service on loopback: /health is
    answered by the service. In the sidecar variant the filter is on only for the gateway's host: another host's
    request never reaches the service."""
    (ef,) = by_kind(istio_docs(), "EnvoyFilter", name)
    bootstrap = istio_bootstrap(ef, context)
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    listener = bootstrap["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = http_port
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    (extproc,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == ISTIO_EXTPROC_CLUSTER]
    extproc["type"] = "STATIC"
    extproc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
        "address": "127.0.0.1",
        "port_value": grpc_port,
    }
    vhosts = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    if context != "GATEWAY":
        vhosts[0]["domains"] = ["ai-gateway.test"]
        other = {
            "name": "other",
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 204}}],
        }
        vhosts.append(other)
    path = tmp_path / "envoy.yaml"
    path.write_text(json.dumps(bootstrap))
    (deploy,) = by_kind(istio_docs(), "Deployment", "ai-gateway-extproc")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [a.replace("/etc/ai-gateway/", str(DEPLOY / "istio") + "/") for a in args]
    service_cmd = replace_flag(["ai-gateway", *args], "--extproc-listen", f"127.0.0.1:{grpc_port}")
    logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]

    def get(host: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/health", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    envoy_cmd = [envoy_bin(), "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn"]
    with (
        running([*local_argv(service_cmd), "--env-file", os.devnull], logs[0]) as svc,
        running(envoy_cmd, logs[1]) as proxy,
    ):
        wait_for("envoy", lambda: get("ai-gateway.test") == 200, [svc, proxy], logs)
        if context != "GATEWAY":
            assert get("elsewhere.test") == 204, "the filter stays off for the workload's other traffic"
