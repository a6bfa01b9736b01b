# syntax=docker/dockerfile:1
# Optimizer workers (`slmops optimizer worker`): torch, transformers, onnx, onnxruntime.
# Installs only `slmops[optimize]`. torch comes from the CPU-only index by default (the CUDA
# wheels add gigabytes); GPU boxes build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
# Build from the repository root:
#   docker build -f deploy/docker/optimizer.Dockerfile -t slmops-optimizer:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY slmops ./slmops
COPY streams ./streams
COPY edge_runtime ./edge_runtime
COPY optimizers ./optimizers
COPY workloads ./workloads
RUN python -m pip wheel --no-deps --wheel-dir /wheels .
# torch first from its own index, so the extra's `torch` requirement is already satisfied.
RUN python -m venv /opt/slmops \
    && /opt/slmops/bin/pip install --index-url "$TORCH_INDEX_URL" torch \
    && /opt/slmops/bin/pip install "$(echo /wheels/slmops-*.whl)[optimize]"

FROM ${PYTHON_IMAGE} AS runtime
# optimizer/ (the optimizer worker's --root, artifact store included) exists in the image so a
# named volume mounted there is owned by the user.
RUN groupadd --system --gid 10001 slmops \
    && useradd --system --uid 10001 --gid slmops --home-dir /var/lib/slmops --create-home \
       --shell /usr/sbin/nologin slmops \
    && install -d -o slmops -g slmops /var/lib/slmops/optimizer
COPY --from=build /opt/slmops /opt/slmops
ENV PATH=/opt/slmops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLMOPS_DATA_DIR=/var/lib/slmops \
    HF_HOME=/var/lib/slmops/hf \
    SLMOPS_METRICS_HOST=0.0.0.0 \
    SLMOPS_METRICS_PORT=9108
WORKDIR /var/lib/slmops
USER 10001:10001
EXPOSE 9108
# /livez, not /healthz: /healthz answers 503 until the worker has joined its consumer group,
# which is readiness, not liveness; neither asks for SLMOPS_HTTP_TOKEN, /metrics may. The HTTP endpoint answers during a build (builds run in a
# thread), so a long build does not fail the check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9108/livez', timeout=4)"]
ENTRYPOINT ["slmops"]
CMD ["optimizer", "worker"]
