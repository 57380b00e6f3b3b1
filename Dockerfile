# syntax=docker/dockerfile:1
#
# RealtimeVoiceChat, Chatterbox edition.
#   docker build -t voicechat .
#   docker run --gpus all -p 8000:8000 -v voicechat-models:/models voicechat
#
# Base: plain python:3.11-slim, not nvidia/cuda. torch 2.6.0 (cu124) brings the CUDA libraries it needs
# as pip wheels (nvidia-cublas, nvidia-cudnn, ...), and the NVIDIA container toolkit mounts the driver
# at run time, so a CUDA base image would only add a second ~3 GB copy of the same libraries.
# docs/deployment.md ("The image") explains the choice in full.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment with the app and all its dependencies -------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone (with a placeholder package), so that a code change
# does not reinstall torch and friends.
COPY pyproject.toml README.md ./
RUN mkdir -p src/voicechat \
    && touch src/voicechat/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes voicechat

# Then the app itself.
COPY src ./src
RUN pip install --no-cache-dir --no-deps .

# ---- final image: the venv on a fresh slim base, no build tools, no pip cache ----------------------
FROM ${PYTHON_IMAGE}

RUN groupadd --gid 1000 voicechat \
    && useradd --create-home --uid 1000 --gid 1000 --shell /usr/sbin/nologin voicechat \
    && mkdir -p /models /data/voices \
    && chown voicechat:voicechat /models /data/voices

COPY --from=builder /opt/venv /opt/venv

# HF_HOME: the Hugging Face cache (Chatterbox and faster-whisper models) lives on the /models volume,
# never in the image. LD_LIBRARY_PATH: CTranslate2 (faster-whisper) loads cuBLAS and cuDNN by name;
# point it at the copies the torch wheels installed.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    VOICECHAT_HOST=0.0.0.0 \
    VOICECHAT_PORT=8000 \
    VOICECHAT_VOICES_DIR=/data/voices

USER 1000:1000
WORKDIR /home/voicechat
EXPOSE 8000

# Healthy = models loaded and the LLM reachable (/readyz answers 200). The first start may download
# several GB of models into /models, hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('VOICECHAT_PORT', '8000')}/readyz\", timeout=4)"]

CMD ["voicechat", "serve"]
