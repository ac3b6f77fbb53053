# syntax=docker/dockerfile:1
# The platform's one Python image: the five streaming services (`emotion serve NAME`), the
# publisher and the consumer (`emotion publish`, `emotion consume`), and the two init jobs (the
# Triton model repository, deploy/docker/model-repository.sh; the topics, shared.kafka_io.ensure_topics).
#
#   docker build -f deploy/docker/emotion.Dockerfile -t emotion-stream:0.1.0 .    # from the repo root
#
# The services infer only through Triton; their own work is Silero VAD (ONNX Runtime), numpy and
# Kafka I/O.  So PyTorch is the CPU build here (TORCH_INDEX_URL; empty: PyPI's default build),
# gigabytes smaller than the CUDA build the Triton image carries; it is used only by the init job
# when it trains the default model.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EMOTION_HOME=/var/lib/emotion

# The audio tools of deploy/local/install-system.sh, less the servers (each has its own container):
# espeak-ng synthesises calls (`emotion publish --synthetic`, the demo corpus of the default
# model), sox and libsndfile decode audio.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng sox libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/emotion

# Dependencies in their own layer, straight from pyproject.toml (rebuilt only when it changes):
# the project's dependencies and the offline model bundle's packages, without nvidia-pytriton
# (the local stack's tritonserver binary: Triton has its own container).
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py /tmp/requirements.py
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" $(python /tmp/requirements.py pyproject.toml --only torch); \
    fi \
 && python /tmp/requirements.py pyproject.toml --extra bundle --exclude nvidia-pytriton > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The project itself, editable: PROJECT_ROOT stays /opt/emotion (recipes, templates, the dashboard
# JSON are read from the source tree, as in a checkout).
COPY shared ./shared
COPY services ./services
COPY training ./training
COPY deploy ./deploy
COPY benchmarks ./benchmarks
RUN pip install --no-deps -e . \
 && emotion --help > /dev/null

# An unprivileged user owns the run directory (the EMOTION_HOME volume: bundle, trained models,
# the Triton model repository) and /run/emotion (the services' --ready-file).
RUN useradd --system --uid 10001 --gid 0 --home-dir /var/lib/emotion --no-create-home emotion \
 && mkdir -p /var/lib/emotion /run/emotion \
 && chown 10001:0 /var/lib/emotion /run/emotion \
 && chmod 0770 /var/lib/emotion /run/emotion
USER 10001
VOLUME ["/var/lib/emotion"]

CMD ["emotion", "--help"]
