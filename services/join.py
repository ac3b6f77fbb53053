"""What the graph and fusion services share: joining an utterance's inputs from several topics.

An utterance's parts (the utterance itself, its text features, its speech features, ...) arrive
on different topics, in any order, possibly at different instances of the service.  Each part is
stored in Redis (:class:`shared.state.UtteranceJoin`) before its offset is committed, so a restart
loses nothing; the message that brings the last missing part completes the utterance, and the
service computes its output from all the parts.  Completed utterances of one batch are computed
together (one Triton request).  Once the outputs are acknowledged the join is marked done, so a
replayed part does not produce the output again.

Ordering: every topic is keyed by call id, so one call's parts come in order on one partition of
each topic; an utterance completes at the later of its parts, hence after the call's previous
utterance, and outputs keep each call's order.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence

from services.triton_service import TritonService
import numpy as np

from shared.contracts import Contract, SpeechFeatures, TextFeatures, Utterance, decode
from shared.runtime import Context, Reject
from shared.settings import Settings, TopicSettings
from shared.state import UtteranceJoin
from shared.triton_models import FeatureRows

log = logging.getLogger(__name__)

Parts = dict[str, Contract]
"""One completed utterance: part name -> its message."""


def feature_rows(joined: Sequence[Parts]) -> FeatureRows:
    """The text and speech features of joined utterances, stacked row for row, with each one's
    speaker baseline (zeros and count 0, the model's prior alone, when the speech features carry
    none: version 1 messages)."""
    text: list[TextFeatures] = [j["text"] for j in joined]  # type: ignore[misc]
    speech: list[SpeechFeatures] = [j["speech"] for j in joined]  # type: ignore[misc]
    frames = np.stack([s.frames.to_array() for s in speech])
    dim = frames.shape[-1]
    mean, var = np.zeros((len(speech), dim), np.float32), np.zeros((len(speech), dim), np.float32)
    count = np.zeros((len(speech), 1), np.float32)
    for i, s in enumerate(speech):
        if s.baseline is not None and s.baseline.utterances > 0:
            mean[i], var[i], count[i, 0] = s.baseline.mean.to_array(), s.baseline.var.to_array(), s.baseline.utterances
    return FeatureRows(
        text_hidden=np.stack([t.hidden.to_array() for t in text]),
        text_mask=np.stack([t.mask.to_array() for t in text]),
        token_offsets=np.stack([t.offsets.to_array() for t in text]),
        speech_frames=frames,
        speech_mask=np.stack([s.mask.to_array() for s in speech]),
        frame_times=np.stack([s.frame_times.to_array() for s in speech]),
        speaker_mean=mean,
        speaker_var=var,
        speaker_count=count,
    )


def utterance_parts(topics: TopicSettings) -> dict[str, tuple[str, type[Contract]]]:
    """The parts both joins start from: the utterance and its text and speech features."""
    return {
        "utterance": (topics.utterances, Utterance),
        "text": (topics.text_features, TextFeatures),
        "speech": (topics.speech_features, SpeechFeatures),
    }


class JoinService(TritonService):
    """A service whose input is a per-utterance join of ``parts`` (name -> (topic, contract))."""

    parts: dict[str, tuple[str, type[Contract]]]

    def __init__(self, settings: Settings, parts: dict[str, tuple[str, type[Contract]]]):
        self.parts = parts
        self._part_of = {contract.contract: name for name, (_, contract) in parts.items()}

    def inputs(self) -> dict[str, type[Contract]]:
        return {topic: contract for topic, contract in self.parts.values()}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.join = UtteranceJoin(ctx.state, self.name, list(self.parts))
        self._pending_checked = 0.0

    @staticmethod
    def _stored(message: Contract) -> bytes:
        if isinstance(message, Utterance) and message.audio is not None:
            message = message.model_copy(update={"audio": None})  # the audio is the speech encoder's
        return message.encode()

    def process(self, batch: list[Contract]) -> list[list[Contract] | Reject]:
        completing: dict[str, int] = {}  # utterance id -> index of the input that completed it
        for i, message in enumerate(batch):
            utterance_id = getattr(message, "utterance_id")
            result = self.join.put(utterance_id, self._part_of[message.contract], self._stored(message))
            if result.already_done:
                log.info("%s: %s already done; ignoring a replayed %s", self.name, utterance_id, message.contract)
            elif result.complete:
                completing[utterance_id] = i
        results: list[list[Contract] | Reject] = [[] for _ in batch]
        if completing:
            ids = list(completing)
            joined = [{name: decode(raw) for name, raw in stored.items()} for stored in self.join.parts_of(ids)]
            rejected = []
            for utterance_id, outcome in zip(ids, self.complete(joined), strict=True):
                results[completing[utterance_id]] = outcome if isinstance(outcome, Reject) else [outcome]
                if isinstance(outcome, Reject):
                    rejected.append(utterance_id)
            self.join.finish(rejected)  # dead-lettered with the input that completed it
        now = time.monotonic()
        if now - self._pending_checked >= self.ctx.settings.runtime.lag_interval_s:
            self._pending_checked = now
            self.ctx.metrics.join_pending.labels(self.name).set(self.join.pending())
        return results

    def delivered(self, outputs: list[Contract]) -> None:
        self.join.finish([getattr(o, "utterance_id") for o in outputs])

    @abstractmethod
    def complete(self, joined: Sequence[Parts]) -> list[Contract | Reject]:
        """One output (or a :class:`Reject`) per completed utterance, in order."""
