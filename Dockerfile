# gtapp: one image for the dashboard and the job workers.
#
#   docker build -t gtapp .                                   # CPU (default)
#   docker build -t gtapp-cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .
#
# The dashboard is the default command; a worker runs
#   celery -A workers.celery_app worker -Q cpu,gpu -c 1 --pool prefork -n worker@%h
# Configuration comes from the environment (see storage/settings.py; docker-compose.yml).

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (TOKENIZERS_PARALLELISM is a tokenizers switch, not a secret: DL3064 is a false alarm)
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    GTAPP_DATA_DIR=/data \
    TOKENIZERS_PARALLELISM=false

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# CUDA base images come without Python; the python:* images already have it.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && groupadd --system --gid 10001 gtapp \
    && useradd --system --uid 10001 --gid gtapp --create-home --home-dir /home/gtapp gtapp \
    && mkdir -p /data /app \
    && chown gtapp:gtapp /data

WORKDIR /app

# Dependencies first, so code changes do not reinstall them. torch comes from the index
# matching the base image (CPU wheels by default, CUDA wheels for a CUDA base).
COPY requirements.txt ./
RUN pip install --extra-index-url "$TORCH_INDEX_URL" -r requirements.txt

COPY pyproject.toml README.md alembic.ini app.py ./
COPY gtapp ./gtapp
COPY storage ./storage
COPY workers ./workers
COPY ui ./ui
RUN pip install --no-deps .

USER 10001:10001
VOLUME ["/data"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "-m", "workers.health"]

CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
