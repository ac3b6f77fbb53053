# syntax=docker/dockerfile:1
# Triton Inference Server: NVIDIA's image, plus the Python packages the five Python-backend models
# import (torch, transformers, faster-whisper/CTranslate2, torch-geometric, numpy,
# pydantic-settings, ...), installed for the image's Python, the one its Python-backend stub embeds.
# None of the project's code: each exported version folder carries the modules its model.py needs
# (training.serving.repository.model_code), so the repository in the volume is all Triton serves.
#
#   docker build -f deploy/docker/triton.Dockerfile -t emotion-stream-triton:0.1.0 .   # from the repo root
#
# TRITON_VERSION needs Python >= 3.11 in the image (the project's requires-python): 24.12 and
# later are Ubuntu 24.04 with Python 3.12, CUDA 12.6 and cuDNN 9 (which CTranslate2's CUDA 12
# wheels load).  PyTorch wheels bring their own CUDA runtime: TORCH_INDEX_URL picks a build the
# hosts' driver supports (empty: PyPI's default build).
ARG TRITON_VERSION=24.12
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3

ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EMOTION_HOME=/var/lib/emotion

# curl: the health check (GET /v2/health/ready); pip for the image's Python (Ubuntu's, PEP 668:
# PIP_BREAK_SYSTEM_PACKAGES, since the stub loads the system interpreter, not a virtualenv).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl python3-pip libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/emotion
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py /tmp/requirements.py
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      python3 -m pip install --index-url "$TORCH_INDEX_URL" $(python3 /tmp/requirements.py pyproject.toml --only torch); \
    fi \
 && python3 /tmp/requirements.py pyproject.toml --exclude nvidia-pytriton > /tmp/requirements.txt \
 && python3 -m pip install -r /tmp/requirements.txt

RUN python3 -c "import torch, transformers, torch_geometric, faster_whisper, ctranslate2, pydantic_settings, yaml"

CMD ["tritonserver", "--help"]
