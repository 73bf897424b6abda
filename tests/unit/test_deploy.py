"""Static and loopback checks of the three deployments (no Docker engine, no cluster needed).

- The service is never on the network: every command a shipped file runs it with listens on a Unix socket (or
  loopback, or TCP with the mTLS flags), and no provider key reaches its container, in any shipped file.
- Every Envoy configuration docker-compose, Kubernetes and Istio rely on passes ``envoy --mode validate`` with the
  files its container would see (Istio's EnvoyFilter patches applied to an Istio-shaped bootstrap); the generated
  files equal a fresh render.
- docker-compose.yml validates against the compose specification; the Kubernetes manifests against Kubernetes'
  schemas (strict: unknown fields fail); the Istio resources against Istio's CRD models (unknown fields fail).
- The container commands are the ones these tests run: the Dockerfile's ENTRYPOINT+CMD, compose's commands and the
  pods' args start the real service and Envoy here, with each volume a directory (``ComposeProject``, ``PodFiles``);
  the health checks and probes pass, a provider gets its key from Envoy, a replaced key file is used without a
  restart, and a missing one is the client's own 401.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import kubernetes_validate
import openai
import pytest
import yaml
from cloudcoil.models.istio.networking import v1 as istio_v1
from cloudcoil.models.istio.networking import v1alpha3 as istio_v1alpha3

from extproc.core.address import Address
from extproc.core.config import key_variables, load_config
from extproc.core.contract import ROUTE_HEADER
from extproc.ops.cli import build_parser
from extproc.ops.envoy_config import ext_proc_filter
from extproc.ops.launcher import find_envoy
from tests.mocks.providers import MockProvider

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "ai-gateway"
SOCKET = "/run/ai-gateway/extproc.sock"
KEYS_DIR = "/run/secrets/ai-gateway"
SERVICE_COMMAND = ["ai-gateway", "extproc", "--extproc-listen", f"unix:{SOCKET}"]
ISTIO_EXTPROC_CLUSTER = "ai-gateway-extproc"
TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-client-ca")  # the service's mTLS flags: all three, or plain
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())  # native sidecars need 1.29
ISTIO_MODELS = {
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): istio_v1alpha3.EnvoyFilter,
    ("networking.istio.io/v1", "ServiceEntry"): istio_v1.ServiceEntry,
    ("networking.istio.io/v1", "DestinationRule"): istio_v1.DestinationRule,
    ("networking.istio.io/v1", "VirtualService"): istio_v1.VirtualService,
    ("networking.istio.io/v1", "Gateway"): istio_v1.Gateway,
}
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# What the key tests ask for: models of the repository's config/proxy-config.yaml (served by openai / anthropic).
OPENAI_MODEL, ANTHROPIC_MODEL = "gpt-4o", "claude-3-5-haiku-20241022"


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


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="aigw-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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


def remap(value: Any, table: dict[str, Path]) -> Any:
    """``value`` with every path under a container path of ``table`` (also as ``unix:PATH``) moved to the directory
    standing for it here: what a container sees at a mount point, this machine has in that directory."""
    if isinstance(value, dict):
        return {k: remap(v, table) for k, v in value.items()}
    if isinstance(value, list):
        return [remap(v, table) for v in value]
    if isinstance(value, str):
        prefix = "unix:" if value.startswith("unix:") else ""
        path = value[len(prefix) :]
        for where in sorted(table, key=len, reverse=True):
            if path == where or path.startswith(where + "/"):
                return prefix + str(table[where]) + path[len(where) :]
    return value


def merge_mounts(mounts: dict[str, dict[str, Path]]) -> dict[str, Path]:
    """One table for several containers' mounts; a path mounted in two of them must be the same volume in both."""
    table: dict[str, Path] = {}
    for who, own in mounts.items():
        for where, host in own.items():
            assert table.setdefault(where, host) == host, f"{who}: {where} is another volume than elsewhere"
    return table


def dockerfile() -> tuple[list[str], str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return text.replace("\\\n", " ").splitlines(), text


def dockerfile_json(instruction: str) -> list[str]:
    lines, _ = dockerfile()
    found = []
    for line in lines:
        if line.startswith(instruction + " "):
            found.append(
                json.loads(line.split(" CMD ", 1)[1] if instruction == "HEALTHCHECK" else line.split(None, 1)[1])
            )
    assert len(found) == 1, f"one exec-form {instruction} expected"
    return found[-1]


def image_user() -> str:
    lines, _ = dockerfile()
    return [line.split()[1] for line in lines if line.startswith("USER ")][-1]


def image_argv(entrypoint: list[str] | None = None, command: list[str] | None = None) -> list[str]:
    """What a container of the ai-gateway image runs: its ENTRYPOINT and CMD unless overridden (Docker's rule: a new
    entrypoint drops the image's CMD)."""
    if entrypoint is not None:
        return [*entrypoint, *(command or [])]
    return [*dockerfile_json("ENTRYPOINT"), *(command if command is not None else dockerfile_json("CMD"))]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (what docker-compose.yml uses)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op == ":?" and not env.get(name):
            raise AssertionError(f"{name} must be set: {arg}")
        return env.get(name) or (arg if op == ":-" else "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, value)


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


def key_secret_name() -> str:
    (secret,) = load_docs(DEPLOY / "k8s" / "secret.example.yaml")
    return secret["metadata"]["name"]


def provider_key_variables() -> set[str]:
    return key_variables(load_config(ROOT / "config" / "proxy-config.yaml", env={}))


# --------------------------------------------------------------------------------- docker-compose, as processes
class ComposeProject:
    """docker-compose.yml's services as plain processes here: each named volume a directory, ``./config`` the
    repository's, the working directory the repository (the image's is /app, where ./config is mounted)."""

    def __init__(self, root: Path, sockets: Path, dotenv: dict[str, str]) -> None:
        self.spec = compose()
        self.dotenv = dotenv
        self.volumes = {
            name: (sockets if name == "extproc-socket" else root / name) for name in self.spec.get("volumes", {})
        }
        for d in self.volumes.values():
            d.mkdir(parents=True, exist_ok=True)
        self.table = merge_mounts({name: self.mounts(name) for name in self.spec["services"]})

    def service(self, name: str) -> dict[str, Any]:
        return self.spec["services"][name]

    def mounts(self, name: str) -> dict[str, Path]:
        out = {}
        for v in self.service(name).get("volumes", []):
            src, dst = v.split(":")[:2]
            out[dst] = (ROOT / src).resolve() if src.startswith(".") else self.volumes[src]
        return out

    def argv(self, name: str) -> list[str]:
        svc = self.service(name)
        if svc["image"].startswith("ai-gateway:"):
            return remap(image_argv(svc.get("entrypoint"), svc.get("command")), self.table)
        return remap(list(svc["command"]), self.table)

    def env(self, name: str) -> dict[str, str]:
        """The container's environment: its env_file (this test's .env) and its environment, interpolated."""
        svc = self.service(name)
        env = clean_env()
        if svc.get("env_file"):
            assert svc["env_file"] == [{"path": ".env", "required": True}]
            env.update(self.dotenv)
        for k, v in (svc.get("environment") or {}).items():
            env[k] = interpolate(str(v), self.dotenv)
        return env

    def render(self, http_port: int, admin_port: int) -> None:
        """Run the one-shot renderer (listener and admin moved to free loopback ports)."""
        argv = self.argv("envoy-config")
        argv = replace_flag(argv, "--listen", f"127.0.0.1:{http_port}")
        argv = replace_flag(argv, "--admin", f"127.0.0.1:{admin_port}")
        done = subprocess.run(
            [*local_argv(argv), "--env-file", os.devnull],  # the image has no .env: this checkout's must not count
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.env("envoy-config"),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    def service_argv(self) -> list[str]:
        return [*local_argv(self.argv("extproc")), "--env-file", os.devnull]

    def envoy_argv(self) -> list[str]:
        argv = self.argv("envoy")
        assert argv[0] == "envoy"
        return [envoy_bin(), *argv[1:], "--use-dynamic-base-id"]


# ------------------------------------------------------------------------------------------ pods, as processes
class PodFiles:
    """A pod's volumes as directories here: ConfigMaps and Secrets written the way the kubelet writes them
    (``..data`` links to a timestamped directory, one link per key; an update swaps ``..data`` by a rename), emptyDirs
    empty. Container paths in the files Envoy reads (bootstrap, SDS) are moved with the mounts."""

    def __init__(
        self,
        pod: dict[str, Any],
        root: Path,
        sockets: Path,
        configmaps: dict[str, dict[str, str]],
        secret: dict[str, str],
    ) -> None:
        self.dirs: dict[str, Path] = {}
        self.modes: dict[str, int] = {}
        assert sum("emptyDir" in vol for vol in pod["volumes"]) == 1, "one emptyDir: the socket's"
        for vol in pod["volumes"]:
            d = sockets if "emptyDir" in vol else root / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            self.dirs[vol["name"]] = d
        containers = {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}
        self.table = merge_mounts({name: self.mounts(c) for name, c in containers.items()})
        self._generation = 0
        for vol in pod["volumes"]:
            if "configMap" in vol:
                data = configmaps[vol["configMap"]["name"]]
                self.write(vol["name"], {k: self._moved(k, v) for k, v in data.items()}, 0o644)
            elif "secret" in vol:
                self.modes[vol["name"]] = vol["secret"].get("defaultMode", 0o644)
                self.write(vol["name"], secret, self.modes[vol["name"]])

    def mounts(self, container: dict[str, Any]) -> dict[str, Path]:
        return {m["mountPath"]: self.dirs[m["name"]] for m in container.get("volumeMounts", [])}

    def _moved(self, name: str, text: str) -> str:
        if name == "envoy.yaml" or name.startswith("sds-"):
            return json.dumps(remap(yaml.safe_load(text), self.table))
        return text

    def write(self, volume: str, data: dict[str, str], mode: int) -> None:
        """The kubelet's atomic update: a new timestamped directory, ``..data`` swapped to it by a rename, then the
        links for keys not seen before, then the old directory removed."""
        target = self.dirs[volume]
        self._generation += 1
        stamp = f"..2026_01_01_00_00_{self._generation:02d}.{os.getpid()}"
        (target / stamp).mkdir()
        for key, value in data.items():
            (target / stamp / key).write_text(value)
            (target / stamp / key).chmod(mode)
        old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
        os.symlink(stamp, target / "..data_tmp")
        os.rename(target / "..data_tmp", target / "..data")
        for key in data:
            if not (target / key).is_symlink():
                os.symlink(f"..data/{key}", target / key)
        for link in target.iterdir():
            if link.is_symlink() and not link.name.startswith("..") and link.name not in data:
                link.unlink()
        if old:
            shutil.rmtree(target / old)

    def update_secret(self, volume: str, data: dict[str, str]) -> None:
        self.write(volume, data, self.modes[volume])


# ------------------------------------------------------------------------------ every service command shipped
def shipped_service_containers() -> list[tuple[str, list[str], dict[str, Any]]]:
    """(where, argv, container) for every container of the ai-gateway image in a shipped file: the Dockerfile's
    default, each compose service, each container of each Deployment in deploy/k8s and deploy/istio."""
    out: list[tuple[str, list[str], dict[str, Any]]] = [("Dockerfile", image_argv(), {})]
    for name, svc in compose()["services"].items():
        if svc["image"].startswith("ai-gateway:"):
            out.append((f"docker-compose.yml:{name}", image_argv(svc.get("entrypoint"), svc.get("command")), svc))
    for where, docs in (("deploy/k8s", k8s_docs()), ("deploy/istio", istio_docs())):
        for deploy in by_kind(docs, "Deployment"):
            pod = deploy["spec"]["template"]["spec"]
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                if c["image"].startswith("ai-gateway:"):
                    argv = image_argv(c.get("command"), c.get("args"))
                    out.append((f"{where}:{deploy['metadata']['name']}/{c['name']}", argv, {**c, "pod": pod}))
    return out


def test_no_shipped_file_puts_the_service_on_the_network() -> None:
    """Every command that starts the service listens on a Unix socket or loopback, or has the mTLS flags."""
    services = [(w, argv) for w, argv, _ in shipped_service_containers() if argv[:2] == ["ai-gateway", "extproc"]]
    assert {w.split(":")[0] for w, _ in services} == {"Dockerfile", "docker-compose.yml", "deploy/k8s", "deploy/istio"}
    for where, argv in services:
        assert all(not a.startswith(("/bin/", "sh", "bash")) for a in argv), f"{where}: no shell to read around"
        args = build_parser("extproc").parse_args(argv[2:])
        addr = Address.parse(args.extproc_listen)  # ":PORT" is every interface, as the service reads it
        if addr.path:
            continue
        loopback = addr.host in ("localhost", "::1") or addr.host.startswith("127.")
        assert loopback or all(f in argv for f in TLS_FLAGS), f"{where}: plain TCP on {addr} without mTLS"
    _, text = dockerfile()
    assert not re.search(r"^EXPOSE ", text, re.M), "the image exposes no port"
    extproc = compose()["services"]["extproc"]
    assert extproc["network_mode"] == "none" and "ports" not in extproc and "expose" not in extproc


def test_no_provider_key_reaches_the_service() -> None:
    """No env_file, environment variable, envFrom, env or volume of a shipped file hands the service container a
    provider key; the key Secret and the key volume go to Envoy (checked, so the scan can see them)."""
    keys, secret = provider_key_variables(), key_secret_name()
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"} <= keys
    services = compose()["services"]
    key_volume = next(v.split(":")[0] for v in services["envoy"]["volumes"] if v.split(":")[1] == KEYS_DIR)
    checked = 0
    for where, argv, c in shipped_service_containers():
        if argv[:2] != ["ai-gateway", "extproc"] or where == "Dockerfile":
            continue
        checked += 1
        if where.startswith("docker-compose.yml"):
            assert "env_file" not in c, f"{where}: an env file carries the provider keys"
            env = c.get("environment") or {}
            assert isinstance(env, dict) and not keys & set(env), where
            assert not any(k in str(v) for v in env.values() for k in keys), f"{where}: a value names a key"
            assert all(v.split(":")[0] != key_volume for v in c.get("volumes", [])), f"{where}: mounts the keys"
        else:
            for ref in c.get("envFrom", []):
                assert ref.get("secretRef", {}).get("name") != secret, f"{where}: envFrom the key Secret"
            for var in c.get("env", []):
                assert var["name"] not in keys, where
                assert var.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != secret, where
            secret_volumes = {v["name"] for v in c["pod"]["volumes"] if v.get("secret", {}).get("secretName") == secret}
            assert secret_volumes, f"{where}: the pod mounts the key Secret somewhere (into the proxy)"
            assert not secret_volumes & {m["name"] for m in c.get("volumeMounts", [])}, f"{where}: mounts the keys"
    assert checked == 3
    # Where the keys do go: the renderer reads .env, Envoy mounts the key volume read-only.
    assert services["envoy-config"]["env_file"] == [{"path": ".env", "required": True}]
    assert f"{key_volume}:{KEYS_DIR}:ro" in services["envoy"]["volumes"]


# ---------------------------------------------------------------------------------------------- generated files
def test_generated_files_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "render.py"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, f"run `python deploy/render.py`: {done.stdout}{done.stderr}"


# ------------------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_runs_the_service_as_the_tests_do() -> None:
    lines, text = dockerfile()
    assert image_argv() == SERVICE_COMMAND
    assert sum(1 for line in lines if line.startswith("FROM ")) >= 2, "multi-stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.M), "slim Python base"
    assert not image_user().startswith(("0", "root")), "runs as a non-root user"
    assert dockerfile_json("HEALTHCHECK") == ["ai-gateway-healthcheck", "--address", f"unix:{SOCKET}"]
    # The socket's directory and the renderer's volume mount points exist and belong to the image's user.
    (setup,) = [line for line in lines if line.startswith("RUN groupadd")]
    for d in (str(Path(SOCKET).parent), KEYS_DIR, "/var/lib/ai-gateway/envoy"):
        assert re.search(rf"mkdir -p [^&]*{d}\b", setup) and re.search(rf"chown [^&]*{d}\b", setup), d
    assert re.search(rf"chmod 0700 [^&]*{KEYS_DIR}\b", setup), "the key directory is the image user's alone"
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


def test_healthcheck_default_is_the_images_socket() -> None:
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), "--timeout", "0.5"], capture_output=True, text=True
    )
    assert done.returncode == 1 and f"extproc at unix:{SOCKET}" in done.stderr


# -------------------------------------------------------------------------------------------- docker-compose
def test_compose_file_follows_the_compose_spec() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_topology() -> None:
    spec = compose()
    services = spec["services"]
    extproc, envoy, render = services["extproc"], services["envoy"], services["envoy-config"]
    assert image_argv(extproc.get("entrypoint"), extproc.get("command")) == SERVICE_COMMAND
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
    assert render["restart"] == "no" and render["network_mode"] == "none"
    # Who mounts which volume: the socket is the service's and Envoy's; the keys and the rendered config are the
    # renderer's and Envoy's (read-only there); nothing else mounts them.
    users: dict[str, dict[str, str]] = {}
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            src, _, *mode = v.split(":")
            users.setdefault(src, {})[name] = mode[0] if mode else "rw"
    assert users["extproc-socket"] == {"extproc": "rw", "envoy": "rw"}
    assert users["provider-keys"] == {"envoy-config": "rw", "envoy": "ro"}
    assert users["envoy-config"] == {"envoy-config": "rw", "envoy": "ro"}
    assert users["./config"] == {"extproc": "ro", "envoy-config": "ro"}
    # The socket volume is memory, owned by the image's user; Envoy runs as that user (0600 keys, owner-only socket).
    socket_volume = spec["volumes"]["extproc-socket"]
    uid, gid = image_user().split(":")
    assert socket_volume["driver_opts"]["type"] == "tmpfs"
    assert f"uid={uid}" in socket_volume["driver_opts"]["o"] and f"gid={gid}" in socket_volume["driver_opts"]["o"]
    assert envoy["user"] == image_user()
    # The renderer: Envoy's config into its volume, the keys into theirs, addresses as Envoy sees them.
    argv = image_argv(render.get("entrypoint"), render["command"])
    assert argv[:2] == ["ai-gateway", "envoy-config"] and "--write-keys" in argv
    mounts = {v.split(":")[1]: v.split(":")[0] for v in render["volumes"]}
    envoy_mounts = {v.split(":")[1]: v.split(":")[0] for v in envoy["volumes"]}
    assert mounts[flag(argv, "--out")] == envoy_mounts[flag(argv, "--sds-dir")] == "envoy-config"
    assert mounts[flag(argv, "--keys-dir")] == envoy_mounts[flag(argv, "--keys-dir")] == "provider-keys"
    assert envoy["command"][:3] == ["envoy", "-c", f"{flag(argv, '--sds-dir')}/envoy.yaml"]
    assert flag(argv, "--listen") == ":8080"
    assert flag(argv, "--extproc-listen") == flag(SERVICE_COMMAND, "--extproc-listen")
    assert envoy_mounts[str(Path(SOCKET).parent)] == "extproc-socket"
    # The healthcheck runs the image's health check against the address the command listens on.
    assert extproc["healthcheck"]["test"] == ["CMD", "ai-gateway-healthcheck", "--address", f"unix:{SOCKET}"]


def test_compose_envoy_config_validates(tmp_path: Path) -> None:
    """The renderer's command writes a bootstrap whose files (SDS files, key directory) are where Envoy's volumes put
    them, talking to the service on the socket volume; Envoy accepts it."""
    with short_dir() as sockets:
        project = ComposeProject(tmp_path, sockets, {})
        project.render(free_port(), free_port())
        bootstrap_path = Path(flag(project.envoy_argv(), "-c"))
        bootstrap = yaml.safe_load(bootstrap_path.read_text())
        clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
        addr = clusters["extproc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        assert addr == {"pipe": {"path": str(sockets / "extproc.sock")}}
        keyed = [c for c in clusters.values() if "http_filters" in c["typed_extension_protocol_options"][HTTP_OPTIONS]]
        assert len(keyed) == 3
        for c in keyed:
            sds = c["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"][0]["typed_config"]["credential"]
            source = sds["typed_config"]["credential"]["sds_config"]["path_config_source"]
            assert Path(source["path"]).parent == project.volumes["envoy-config"]
            assert source["watched_directory"]["path"] == str(project.volumes["provider-keys"])
        envoy_validate(bootstrap_path)


def test_compose_commands_serve_on_loopback(tmp_path: Path) -> None:
    """The compose services' commands (volumes as directories, ports moved to free loopback ports) run the real
    service and Envoy over the socket; both compose health checks pass against them."""
    http_port, admin_port = free_port(), free_port()
    with short_dir() as sockets:
        project = ComposeProject(tmp_path, sockets, {})
        project.render(http_port, admin_port)
        logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
        with running(project.service_argv(), logs[0], project.env("extproc")) as svc:
            health = project.service("extproc")["healthcheck"]["test"][1:]
            check = [sys.executable, str(DEPLOY / "healthcheck.py"), *remap(health[1:], project.table)]
            wait_for("extproc", lambda: subprocess.run(check, capture_output=True).returncode == 0, [svc], logs[:1])
            with running(project.envoy_argv(), logs[1]) as envoy:
                url = f"http://127.0.0.1:{http_port}/health"
                wait_for("envoy", lambda: http_status(url) == 200, [svc, envoy], logs)
                probe = project.service("envoy")["healthcheck"]["test"][1:]
                probe = [a.replace("/127.0.0.1/8080", f"/127.0.0.1/{http_port}") for a in probe]
                assert subprocess.run(probe, capture_output=True, timeout=10).returncode == 0, "envoy healthcheck"


# -------------------------------------------------------------------------------------------------- Kubernetes
def k8s_docs() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "k8s")


def k8s_pod() -> dict[str, Any]:
    (deploy,) = by_kind(k8s_docs(), "Deployment", "ai-gateway")
    return deploy["spec"]["template"]["spec"]


def configmaps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {cm["metadata"]["name"]: cm["data"] for cm in by_kind(docs, "ConfigMap")}


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
    assert ["ai-gateway", *extproc["args"][:3]] == SERVICE_COMMAND
    socket_addr = flag(extproc["args"], "--extproc-listen")
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
    assert flag(extproc["args"], "--config") == f"{config_dir}/proxy-config.yaml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    # Keys: the Secret as files in Envoy's container only, where the ConfigMap's SDS files look for them.
    assert "envFrom" not in extproc
    # the only variable: governance's Redis URL, from a Secret of its own (docs/governance.md)
    assert [(v["name"], v["valueFrom"]["secretKeyRef"]["name"]) for v in extproc.get("env", [])] == [
        ("AI_GATEWAY_REDIS_URL", "ai-gateway-redis")
    ]
    assert volumes["provider-keys"]["secret"]["secretName"] == key_secret_name()
    assert mounts["envoy"]["provider-keys"] == KEYS_DIR and "provider-keys" not in mounts["extproc"]
    assert volumes["provider-keys"]["secret"]["defaultMode"] & 0o007 == 0, "not world-readable"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"], "Envoy's group reads them"
    sds_files = sorted(n for n in cm["data"] if n.startswith("sds-"))
    assert len(sds_files) == 3
    for name in sds_files:
        (res,) = yaml.safe_load(cm["data"][name])["resources"]
        secret = res["generic_secret"]["secret"]
        assert Path(secret["filename"]).parent == Path(secret["watched_directory"]["path"]) == Path(KEYS_DIR)
        assert Path(secret["filename"]).name in provider_key_variables()
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


def k8s_pod_files(root: Path, sockets: Path, secret: dict[str, str]) -> PodFiles:
    return PodFiles(k8s_pod(), root, sockets, configmaps(k8s_docs()), secret)


def test_k8s_envoy_config_validates(tmp_path: Path) -> None:
    """The ConfigMap's bootstrap with the pod's volumes: its SDS files and key directory are where the mounts of the
    Envoy container put them; Envoy accepts it."""
    (envoy,) = k8s_pod()["containers"]
    with short_dir() as sockets:
        files = k8s_pod_files(tmp_path, sockets, {})
        config = remap(flag(envoy["args"], "-c"), files.mounts(envoy))
        envoy_validate(Path(config))
    load_config(DEPLOY / "k8s" / "proxy-config.yaml", env={})


def test_k8s_pod_serves_on_loopback(tmp_path: Path) -> None:
    """The pod's two containers as the manifest runs them (volumes as directories, ports moved to free loopback
    ports): the startup probe, the readiness probe through Envoy, and the preStop drain all work."""
    pod = k8s_pod()
    (extproc,) = pod["initContainers"]
    (envoy,) = pod["containers"]
    with short_dir() as sockets:
        files = k8s_pod_files(tmp_path, sockets, {})
        config = Path(remap(flag(envoy["args"], "-c"), files.mounts(envoy)))
        http_port, admin_port = free_port(), free_port()
        bootstrap = json.loads(config.read_text())
        bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"] = {
            "address": "127.0.0.1",
            "port_value": http_port,
        }
        bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
        config.write_text(json.dumps(bootstrap))
        service_cmd = remap(["ai-gateway", *extproc["args"]], files.mounts(extproc))
        envoy_cmd = [envoy_bin(), *remap(envoy["args"], files.mounts(envoy)), "--use-dynamic-base-id"]
        startup = remap(extproc["startupProbe"]["exec"]["command"], files.mounts(extproc))
        startup = [sys.executable, str(DEPLOY / "healthcheck.py"), *startup[1:]]
        logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
        with running([*local_argv(service_cmd), "--env-file", os.devnull], logs[0]) as svc:
            wait_for("extproc", lambda: subprocess.run(startup, capture_output=True).returncode == 0, [svc], logs[:1])
            live = remap(extproc["livenessProbe"]["exec"]["command"], files.mounts(extproc))
            assert subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), *live[1:]]).returncode == 0
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
    return kustomize(DEPLOY / "istio")


def istio_pod() -> dict[str, Any]:
    (deploy,) = by_kind(istio_docs(), "Deployment", "ai-gateway")
    return deploy["spec"]["template"]["spec"]


def test_istio_resources_validate() -> None:
    docs = istio_docs()
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"EnvoyFilter", "ServiceEntry", "DestinationRule", "VirtualService", "Gateway", "Deployment"}
    assert not by_kind(docs, "Service", "ai-gateway-extproc"), "the service has no Service: it is in the gateway pod"
    for doc in docs:
        if doc["apiVersion"].startswith("networking.istio.io/"):
            istio_validate(doc)
        else:
            k8s_validate(doc)


def test_istio_gateway_pod_wiring() -> None:
    """The service is a native sidecar of the gateway pod on a Unix socket the EnvoyFilter's cluster points at; the
    key Secret and the SDS files are mounted into istio-proxy only, at the paths the injector config names."""
    docs = istio_docs()
    (ef,) = by_kind(docs, "EnvoyFilter")
    pod = istio_pod()
    (extproc,) = pod["initContainers"]
    (proxy,) = pod["containers"]
    assert proxy["name"] == "istio-proxy" and extproc["restartPolicy"] == "Always"
    assert ["ai-gateway", *extproc["args"][:3]] == SERVICE_COMMAND
    # Same user as the proxy: the socket accepts its owner only.
    assert extproc["securityContext"]["runAsUser"] == proxy["securityContext"]["runAsUser"]
    (added,) = [p for p in ef["spec"]["configPatches"] if p["patch"]["operation"] == "ADD"]
    cluster = added["patch"]["value"]
    assert cluster["name"] == ISTIO_EXTPROC_CLUSTER
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": flag(extproc["args"], "--extproc-listen")[5:]}}
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (extproc, proxy)}
    assert mounts["extproc"]["socket"] == mounts["istio-proxy"]["socket"] == str(Path(SOCKET).parent)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["provider-keys"]["secret"]["secretName"] == key_secret_name()
    assert mounts["istio-proxy"]["provider-keys"] == KEYS_DIR and "provider-keys" not in mounts["extproc"]
    assert "envFrom" not in extproc and "env" not in extproc
    assert pod["securityContext"]["fsGroup"] == proxy["securityContext"]["runAsGroup"], "the proxy reads the keys"
    (cm,) = by_kind(docs, "ConfigMap", volumes["config"]["configMap"]["name"])
    sds_paths = set()
    for patch in ef["spec"]["configPatches"]:
        options = patch["patch"]["value"].get("typed_extension_protocol_options", {}).get(HTTP_OPTIONS, {})
        for f in options.get("http_filters", []):
            if f["name"] == "envoy.filters.http.credential_injector":
                sds = f["typed_config"]["credential"]["typed_config"]["credential"]["sds_config"]
                sds_paths.add(sds["path_config_source"]["path"])
    assert {str(Path(mounts["istio-proxy"]["config"]) / n) for n in cm["data"] if n.startswith("sds-")} == sds_paths
    assert len(sds_paths) == 3
    assert flag(extproc["args"], "--config") == f"{mounts['extproc']['config']}/proxy-config.yaml"
    # The gateway's selector is the EnvoyFilter's.
    (gateway,) = by_kind(docs, "Gateway")
    selector = ef["spec"]["workloadSelector"]["labels"]
    assert selector == gateway["spec"]["selector"]
    assert (
        selector.items()
        <= by_kind(docs, "Deployment", "ai-gateway")[0]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_istio_envoyfilter_embeds_the_ext_proc_filter() -> None:
    (ef,) = by_kind(istio_docs(), "EnvoyFilter")
    (insert,) = [p for p in ef["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    assert insert["patch"]["operation"] == "INSERT_BEFORE" and insert["match"]["context"] == "GATEWAY"
    assert insert["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    expected = ext_proc_filter(cluster_name=ISTIO_EXTPROC_CLUSTER)
    assert insert["patch"]["value"] == json.loads(json.dumps(expected)), "the same filter config as the bootstrap's"
    # The added cluster is the k8s bootstrap's, renamed: one definition of how Envoy talks to the service.
    (cm,) = by_kind(k8s_docs(), "ConfigMap", "ai-gateway-config")
    k8s = {c["name"]: c for c in yaml.safe_load(cm["data"]["envoy.yaml"])["static_resources"]["clusters"]}
    (added,) = [p["patch"]["value"] for p in ef["spec"]["configPatches"] if p["patch"]["operation"] == "ADD"]
    expected_cluster = copy.deepcopy(k8s["extproc"])
    expected_cluster["name"] = expected_cluster["load_assignment"]["cluster_name"] = ISTIO_EXTPROC_CLUSTER
    assert added == expected_cluster


def test_istio_routing_matches_the_providers() -> None:
    docs = istio_docs()
    cfg = load_config(DEPLOY / "istio" / "proxy-config.yaml", env={})
    providers = {p.name: p for p in cfg.used_providers()}
    entries = {h: se for se in by_kind(docs, "ServiceEntry") for h in se["spec"]["hosts"]}
    rules = {dr["spec"]["host"]: dr for dr in by_kind(docs, "DestinationRule")}
    (vs,) = by_kind(docs, "VirtualService")
    assert vs["spec"]["gateways"] == ["ai-gateway"], "routes on the gateway only: no mesh route around it"
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


def istio_cluster_merge(cluster: dict[str, Any], value: dict[str, Any]) -> None:
    """A CLUSTER MERGE the way istiod does it: a protobuf merge, in which an Any (each entry of
    typed_extension_protocol_options) is replaced whole, not merged (istio/istio#53685, #55940)."""
    value = copy.deepcopy(value)
    options = value.pop("typed_extension_protocol_options", {})
    deep_merge(cluster, value)
    cluster.setdefault("typed_extension_protocol_options", {}).update(options)


def istio_bootstrap(envoyfilter: dict[str, Any]) -> dict[str, Any]:
    """A bootstrap shaped like what istiod gives the gateway (an HTTP listener on 8080 with only the router, Istio's
    cluster names, routes from the VirtualService, TLS and an HTTP/2-capable Any from the ServiceEntries and
    DestinationRules), with the EnvoyFilter's patches applied the way Istio applies them."""
    docs = istio_docs()
    (vs,) = by_kind(docs, "VirtualService")
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
    vhost = {"name": "*:8080", "domains": ["*"], "routes": routes}
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
    # Istio's own protocol options on a cluster: the patch must replace them, not add to them.
    istio_options = {
        HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
            "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
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

    clusters: dict[str, dict[str, Any]] = {}
    rules = {dr["spec"]["host"]: dr for dr in by_kind(docs, "DestinationRule")}
    for se in by_kind(docs, "ServiceEntry"):
        (host,) = se["spec"]["hosts"]
        for port in se["spec"]["ports"]:
            if port["protocol"] != "HTTP":
                continue
            name = f"outbound|{port['number']}||{host}"
            c = cluster(name, host, port.get("targetPort", port["number"]))
            c["typed_extension_protocol_options"] = copy.deepcopy(istio_options)
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
        assert patch["match"]["context"] == "GATEWAY"
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
            assert patch["match"].get("listener", {}).get("portNumber") in (None, 8080)
            deep_merge(listener, value)
        elif kind == "CLUSTER" and op == "ADD":
            assert "cluster" not in patch["match"] and value["name"] not in clusters
            clusters[value["name"]] = copy.deepcopy(value)
        elif kind == "CLUSTER":
            assert op == "MERGE"
            name = f"outbound|{patch['match']['cluster']['portNumber']}||{patch['match']['cluster']['service']}"
            assert name in clusters, f"EnvoyFilter patches a cluster no resource creates: {name}"
            istio_cluster_merge(clusters[name], value)
        else:
            pytest.fail(f"unexpected patch {kind}")
    return {
        "node": {"id": "istio-proxy", "cluster": "ai-gateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {"listeners": [listener], "clusters": list(clusters.values())},
    }


def istio_pod_files(root: Path, sockets: Path, secret: dict[str, str]) -> PodFiles:
    return PodFiles(istio_pod(), root, sockets, configmaps(istio_docs()), secret)


def istio_proxy_bootstrap(files: PodFiles) -> dict[str, Any]:
    """The patched gateway bootstrap as the gateway pod's istio-proxy sees its files."""
    (ef,) = by_kind(istio_docs(), "EnvoyFilter")
    (proxy,) = istio_pod()["containers"]
    return remap(istio_bootstrap(ef), files.mounts(proxy))


def test_istio_envoyfilter_in_a_bootstrap_validates(tmp_path: Path) -> None:
    (proxy,) = istio_pod()["containers"]
    with short_dir() as sockets:
        files = istio_pod_files(tmp_path, sockets, {})
        bootstrap = istio_proxy_bootstrap(files)
        hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
        # The bootstrap's local-reply mappers (Envoy's own connect-failure/timeout/missing-key replies tagged for the
        # service to answer in the client's format).
        (cm,) = by_kind(k8s_docs(), "ConfigMap", "ai-gateway-config")
        k8s = yaml.safe_load(cm["data"]["envoy.yaml"])
        expected = k8s["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        assert hcm["local_reply_config"] == expected["local_reply_config"]
        # Each keyed provider's cluster: Istio's protocol options replaced by HTTP/1.1 and the k8s bootstrap's
        # upstream filters (credential injector, codec), whose files are where the proxy's mounts put them.
        k8s_clusters = {c["name"]: c for c in k8s["static_resources"]["clusters"]}
        clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
        cfg = load_config(DEPLOY / "istio" / "proxy-config.yaml", env={})
        for p in cfg.used_providers():
            port = 80 if p.upstream.tls else p.upstream.port
            options = clusters[f"outbound|{port}||{p.upstream.host}"]["typed_extension_protocol_options"][HTTP_OPTIONS]
            want = k8s_clusters[p.cluster]["typed_extension_protocol_options"][HTTP_OPTIONS]["http_filters"]
            assert options == {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": remap(want, files.mounts(proxy)),
            }
        envoy_validate(bootstrap)


def test_istio_gateway_pod_serves_on_loopback(tmp_path: Path) -> None:
    """The gateway pod: the service as its native sidecar runs it, the patched Istio-shaped proxy with the pod's
    files (listener and admin moved to free loopback ports): /health is answered through the socket."""
    pod = istio_pod()
    (extproc,) = pod["initContainers"]
    with short_dir() as sockets:
        files = istio_pod_files(tmp_path, sockets, {})
        bootstrap = istio_proxy_bootstrap(files)
        http_port, admin_port = free_port(), free_port()
        bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = http_port
        bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
        path = tmp_path / "envoy.json"
        path.write_text(json.dumps(bootstrap))
        service_cmd = remap(["ai-gateway", *extproc["args"]], files.mounts(extproc))
        startup = remap(extproc["startupProbe"]["exec"]["command"], files.mounts(extproc))
        startup = [sys.executable, str(DEPLOY / "healthcheck.py"), *startup[1:]]
        logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
        envoy_cmd = [envoy_bin(), "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn"]
        with running([*local_argv(service_cmd), "--env-file", os.devnull], logs[0]) as svc:
            wait_for("extproc", lambda: subprocess.run(startup, capture_output=True).returncode == 0, [svc], logs[:1])
            with running(envoy_cmd, logs[1]) as proxy:
                url = f"http://127.0.0.1:{http_port}/health"
                wait_for("gateway", lambda: http_status(url) == 200, [svc, proxy], logs)


# ------------------------------------------------------------------------- provider keys: injected, rotated, missing
@dataclass
class Deployment:
    """One deployment's shape running here: its service command, its Envoy (bootstrap from its own files), its way
    of changing a provider key (compose: re-run the renderer; Kubernetes/Istio: the kubelet updating the Secret)."""

    url: str
    service: list[str]
    service_env: dict[str, str]
    envoy: list[str]
    set_keys: Callable[[dict[str, str]], None]


def _to_mock(bootstrap: dict[str, Any], mocks: dict[str, MockProvider], cluster_of: dict[str, str]) -> None:
    """Point each provider's cluster at its mock (plain HTTP/1.1 on loopback), keeping its upstream filters."""
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    for kind, mock in mocks.items():
        c = clusters[cluster_of[kind]]
        c.pop("transport_socket", None)
        c["type"] = "STATIC"
        address = {"socket_address": {"address": "127.0.0.1", "port_value": mock.port}}
        c["load_assignment"]["endpoints"] = [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
        options = c["typed_extension_protocol_options"][HTTP_OPTIONS]
        options.pop("auto_config", None)
        options["explicit_http_config"] = {"http_protocol_options": {}}


@contextlib.contextmanager
def deployment(
    shape: str, tmp: Path, sockets: Path, mocks: dict[str, MockProvider], keys: dict[str, str]
) -> Iterator[Deployment]:
    http_port, admin_port = free_port(), free_port()
    if shape == "compose":
        dotenv = {
            **keys,
            "OPENAI_BASE_URL": mocks["openai"].base_url,
            "ANTHROPIC_BASE_URL": mocks["anthropic"].base_url,
        }
        project = ComposeProject(tmp, sockets, dotenv)
        project.render(http_port, admin_port)

        def rotate(new: dict[str, str]) -> None:
            project.dotenv = {**dotenv, **new}
            project.render(http_port, admin_port)

        yield Deployment(
            f"http://127.0.0.1:{http_port}",
            project.service_argv(),
            project.env("extproc"),
            project.envoy_argv(),
            rotate,
        )
        return
    pod = k8s_pod() if shape == "k8s" else istio_pod()
    files = (k8s_pod_files if shape == "k8s" else istio_pod_files)(tmp, sockets, keys)
    (extproc,) = pod["initContainers"]
    (proxy,) = pod["containers"]
    if shape == "k8s":
        config = Path(remap(flag(proxy["args"], "-c"), files.mounts(proxy)))
        bootstrap = json.loads(config.read_text())
        bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"] = {
            "address": "127.0.0.1",
            "port_value": http_port,
        }
        cluster_of = {"openai": "provider_openai", "anthropic": "provider_anthropic"}
        envoy_args = remap(proxy["args"], files.mounts(proxy))
    else:
        bootstrap = istio_proxy_bootstrap(files)
        bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = http_port
        config = tmp / "istio-proxy.json"
        cluster_of = {"openai": "outbound|80||api.openai.com", "anthropic": "outbound|80||api.anthropic.com"}
        envoy_args = ["-c", str(config)]
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    _to_mock(bootstrap, mocks, cluster_of)
    config.write_text(json.dumps(bootstrap))
    (volume,) = [v["name"] for v in pod["volumes"] if "secret" in v]
    yield Deployment(
        f"http://127.0.0.1:{http_port}",
        [*local_argv(remap(["ai-gateway", *extproc["args"]], files.mounts(extproc))), "--env-file", os.devnull],
        clean_env(),
        [envoy_bin(), *envoy_args, "--use-dynamic-base-id"],
        lambda new: files.update_secret(volume, {**keys, **new}),
    )


def ask_openai(url: str, model: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="client-key", max_retries=0, timeout=20)
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return out.choices[0].message.content or ""


def ask_anthropic(url: str, model: str) -> str:
    client = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key="client-key", max_retries=0, timeout=20)
    out = client.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    return "".join(b.text for b in out.content if b.type == "text")


@pytest.mark.parametrize("shape", ["compose", "k8s", "istio"])
def test_envoy_injects_rotates_and_misses_provider_keys(tmp_path: Path, shape: str) -> None:
    """Through each deployment's own Envoy config and files: the provider receives the key Envoy read from the key
    file; after the deployment's way of changing a key (the compose renderer re-run; the kubelet's Secret update) the
    next requests carry the new key, with the same Envoy process; a provider without a key file answers the client
    a 401 in the client's own format (both SDKs raise AuthenticationError), naming the variable to set, and its
    provider never sees the request."""
    first, second = "sk-first-0123456789", "sk-second-9876543210"
    with (
        MockProvider("openai", first) as oa,
        MockProvider("anthropic", "sk-ant-never-set") as an,
        short_dir() as sockets,
        deployment(shape, tmp_path, sockets, {"openai": oa, "anthropic": an}, {"OPENAI_API_KEY": first}) as d,
    ):
        logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
        with running(d.service, logs[0], d.service_env) as svc, running(d.envoy, logs[1]) as proxy:
            wait_for("gateway", lambda: http_status(f"{d.url}/health") == 200, [svc, proxy], logs)
            assert "Hello from mock openai" in ask_openai(d.url, OPENAI_MODEL)
            assert oa.last().headers["authorization"] == f"Bearer {first}"
            assert "Hello from mock openai" in ask_anthropic(d.url, OPENAI_MODEL), "any client format"
            assert oa.last().headers["authorization"] == f"Bearer {first}"
            # No key file for anthropic: Envoy's own 401, in each client's format.
            with pytest.raises(openai.AuthenticationError) as oa_err:
                ask_openai(d.url, ANTHROPIC_MODEL)
            assert "ANTHROPIC_API_KEY" in oa_err.value.message
            with pytest.raises(anthropic.AuthenticationError) as an_err:
                ask_anthropic(d.url, ANTHROPIC_MODEL)
            assert an_err.value.body["type"] == "error" and "ANTHROPIC_API_KEY" in an_err.value.message
            assert an.requests == [], "a request without its key never leaves Envoy"
            # Rotation: the provider now wants the new key; Envoy picks up the replaced file by itself.
            oa.api_key = second
            d.set_keys({"OPENAI_API_KEY": second})

            def rotated() -> bool:
                with contextlib.suppress(openai.APIError):
                    ask_openai(d.url, OPENAI_MODEL)
                return oa.last().headers["authorization"] == f"Bearer {second}"

            wait_for("the rotated key", rotated, [svc, proxy], logs, timeout=20)
            assert "Hello from mock openai" in ask_openai(d.url, OPENAI_MODEL)
            assert proxy.poll() is None, "the same Envoy process, never restarted"
