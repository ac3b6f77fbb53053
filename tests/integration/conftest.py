"""One real local stack for the whole integration session, on its own ports and run directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.settings import load_settings


def isolated_settings(tmp_path_factory, stack_name: str):
    """Settings for a stack of its own: a fresh home, free ports, and the real model bundle
    (assembled by the set-up) so that no test downloads or rebuilds models."""
    from deploy.local.stack import isolated

    return isolated(load_settings(), stack_name, home=tmp_path_factory.mktemp(f"{stack_name}-home"))


def save_random_model(directory: Path, seed: int):
    """A proposed model with random weights (fixed seed) saved as a trained model folder: what
    serving tests need without minutes of training. It normalises the speech frames per speaker
    (a prior of zeros and ones: each speaker's baseline moves the frames), so the served path of the
    speaker baselines (speech encoder service, Redis, the models' ``SPEAKER_*`` inputs) is checked too."""
    import torch

    from training.checkpoint import ModelMeta, save_model
    from training.models import FusionConfig, build_model

    torch.manual_seed(seed)
    model = build_model("proposed", FusionConfig(d_text=384, d_speech=512, speaker_norm=True)).eval()
    save_model(
        directory, model, ModelMeta("proposed", model.config.to_dict(), list(model.config.class_names), seed=seed)
    )
    return model


class Drain:
    """Proof that the pipeline has drained, in place of a quiet period, checked in this order:

    1. no call's audio is held by the ASR service (every call has ended or been flushed by the
       silence timeout, and those utterances are acknowledged: a call that never sends
       ``end_of_call`` has its chunks committed long before its last utterance exists);
    2. every service's consumer group has committed every message of its input topics (lag 0; a
       service commits only after its outputs are acknowledged, so nothing is being processed,
       held in a batch or waiting for a replay);
    3. the test's ``reader`` (a :class:`~shared.kafka_io.TailReader`) has read each of its
       partitions to the end.

    Anything a service will ever publish for the messages so far is then in the reader's hands.
    :meth:`why_not` says which step failed last."""

    def __init__(self, settings) -> None:
        from benchmarks.monitor import LagSampler
        from benchmarks.pipeline import pipeline_inputs
        from shared.state import StateStore

        self._lag = LagSampler(settings, pipeline_inputs(settings))
        self._state = StateStore(settings)
        self.open_calls: list[str] = []
        self.lag: dict[str, int] = {}
        """The lag of each service at the last :meth:`reached`."""
        self.reader_at_end: bool | None = None

    def reached(self, reader) -> bool:
        from services.asr_alignment import AsrAlignmentService

        self.open_calls = AsrAlignmentService.open_calls(self._state)
        self.lag, self.reader_at_end = {}, None
        if self.open_calls:
            return False
        self.lag = self._lag.lag()
        if any(self.lag.values()):
            return False
        self.reader_at_end = reader.at_end()
        return self.reader_at_end

    def why_not(self) -> str:
        """What the last :meth:`reached` found still in flight."""
        if self.open_calls:
            return f"calls still held by the ASR service: {self.open_calls}"
        if any(self.lag.values()):
            return f"services behind their input (consumer lag): { {k: v for k, v in self.lag.items() if v} }"
        if self.reader_at_end is False:
            return "the test's reader had not read its topics to their end"
        return "drained"

    def close(self) -> None:
        self._lag.close()
        self._state.close()


@contextmanager
def running_pipeline(settings, seed: int, instances: dict[str, int] | None = None, shipped: bool = False) -> Iterator:
    """The whole stack and the five services (``emotion serve`` processes) on ``settings``, serving
    a proposed model with random weights (``seed``), or with ``shipped`` the shipped default model
    (as ``emotion demo`` does); yields the :class:`ServiceProcesses`."""
    from deploy.local import stack
    from deploy.local.services import ServiceProcesses
    from training.serving.export import export_repository
    from training.train import ensure_default_model

    settings.triton.request_timeout_s = 300.0  # Whisper on a shared 2-core box: utterances queue
    settings.triton.startup_timeout_s = 480.0
    if shipped:
        ensure_default_model(settings)
    else:
        save_random_model(settings.default_model_dir, seed)
    export_repository(settings)
    services = ServiceProcesses(settings, instances=instances)
    try:
        stack.up(settings, timeout_s=600)
        services.start(timeout_s=600)
        yield services
    finally:
        services.stop()
        stack.down(settings)


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory):
    """The session's shared test stack (all components), serving the text encoder."""
    from deploy.local import stack
    from training.serving.export import export_repository

    s = isolated_settings(tmp_path_factory, "itest")
    s.prometheus.scrape_interval_s = 1.0
    s.kafka.num_partitions = 2
    export_repository(s, models=["text_encoder"])  # what the tests on this stack serve
    try:
        stack.up(s)
        yield s
    finally:
        if os.environ.get("EMOTION_KEEP_TEST_STACK") != "1":
            stack.down(s)
