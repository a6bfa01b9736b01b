# syntax=docker/dockerfile:1
# The edge runtime (`slmops edge run`): onnxruntime, aiohttp, no torch and no Faust.
# Installs only `slmops[edge]`; tests/deploy checks that this extra's dependency closure holds
# neither torch nor transformers nor faust.
# Build from the repository root:
#   docker build -f deploy/docker/edge.Dockerfile -t slmops-edge:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY slmops ./slmops
COPY streams ./streams
COPY edge_runtime ./edge_runtime
COPY optimizers ./optimizers
COPY workloads ./workloads
RUN python -m pip wheel --no-deps --wheel-dir /wheels .
RUN python -m venv /opt/slmops \
    && /opt/slmops/bin/pip install "$(echo /wheels/slmops-*.whl)[edge]"

FROM ${PYTHON_IMAGE} AS runtime
# optimizer/ (the optimizer worker's --root, artifact store included) exists in the image so a
# named volume mounted there is owned by the user.
RUN groupadd --system --gid 10001 slmops \
    && useradd --system --uid 10001 --gid slmops --home-dir /var/lib/slmops --create-home \
       --shell /usr/sbin/nologin slmops \
    && install -d -o slmops -g slmops /var/lib/slmops/optimizer
COPY --from=build /opt/slmops /opt/slmops
# EdgeSettings.http_port defaults to 0 (no server) and http_host to loopback: a container
# must listen on all interfaces for its port to be reachable.
ENV PATH=/opt/slmops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLMOPS_DATA_DIR=/var/lib/slmops \
    SLMOPS_HTTP_HOST=0.0.0.0 \
    SLMOPS_HTTP_PORT=8080
WORKDIR /var/lib/slmops
USER 10001:10001
EXPOSE 8080
# /livez, not /healthz: /healthz answers 503 until a model is installed, which is readiness
# (whether to send traffic), not liveness (whether to restart). Neither asks for a token.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/livez', timeout=4)"]
# `edge run` requires --device-id: take it from SLMOPS_DEVICE_ID, else the container's hostname
# (the pod name under Kubernetes). Extra arguments (e.g. --cohort) pass through.
ENTRYPOINT ["/bin/sh", "-c", "exec slmops edge run --device-id \"${SLMOPS_DEVICE_ID:-$HOSTNAME}\" \"$@\"", "slmops-edge"]
CMD []
