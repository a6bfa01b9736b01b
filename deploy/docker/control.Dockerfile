# syntax=docker/dockerfile:1
# The control plane: Faust control workers (`slmops control worker`) and the one-shot
# `slmops topics create`. Installs only `slmops[control]`: no torch, no onnxruntime.
# Build from the repository root:
#   docker build -f deploy/docker/control.Dockerfile -t slmops-control:0.1.0 .
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
# The venv lives at the same path in both stages, so its scripts' shebangs stay valid.
RUN python -m venv /opt/slmops \
    && /opt/slmops/bin/pip install "$(echo /wheels/slmops-*.whl)[control]"

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
    SLMOPS_WEB_HOST=0.0.0.0
WORKDIR /var/lib/slmops
USER 10001:10001
# ControlSettings.web_port, on every interface of the container (SLMOPS_WEB_HOST above).
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:6066/livez', timeout=4)"]
ENTRYPOINT ["slmops"]
CMD ["control", "worker"]
