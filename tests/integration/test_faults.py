"""Faults on the real pipeline, mid-stream: nothing is lost, and every utterance has one event.

The delivery guarantee tested here is the one the system gives (docs/reliability.md):

* **at-least-once** on every topic: a service commits its input offsets only after the broker has
  acknowledged every output of the batch, and a failed dependency rewinds the batch;
* **idempotent ids**: an utterance's id is ``<call_id>:<index>`` (the ASR service's state in Redis
  numbers them, so a replay numbers them the same), and its event's ``message_id`` is
  :meth:`EmotionEvent.event_id` of the utterance and the model version: a repeat is recognisable;
* **consumer-side de-duplication** on that id (``emotion consume``, the dashboard).

So for each fault: the calls yield exactly the utterances the service's segmenter cuts from their
audio without a fault (none lost, none invented by a replay), every utterance has at least one event on the topic, all of its events carry one id and one
label, and after de-duplication there is exactly one event per utterance.

Faults, each while two calls stream in real time: SIGKILL each of the five services in turn and
start it again; restart Kafka (SIGTERM, same data); restart Triton; stop Redis and start it again
(the service state is in Redis's append-only file: it comes back).

Each fault is shown to have hit work in progress: a service is frozen (SIGSTOP) until its group has
uncommitted input, then killed, so its new instance must take that input up again from the
committed offsets; after a restart of Kafka, Triton or Redis, a service has logged that it met the
failed dependency and retried (:data:`RETRIED`).  Exactly-once is judged once the pipeline has
provably drained (:class:`tests.integration.conftest.Drain`), not after a quiet period.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest

from deploy.local.services import PIPELINE
from shared.contracts import EmotionEvent, Utterance, decode
from tests.integration.conftest import Drain, isolated_settings, running_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2700)]
"""Above the fixtures' own limits (stack and services start-up, 600 s each; the stream's 900 s
deadline), which then report first, with what they saw."""

SEED = 1357


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    s = isolated_settings(tmp_path_factory, "itest-faults")
    s.runtime.retry_backoff_s = 0.5
    with running_pipeline(s, SEED) as services:
        yield s, services


@dataclass
class Run:
    turns: dict[str, int]
    """Call id -> the number of utterances its audio holds (as the ASR service's segmenter cuts it)."""
    utterances: dict[str, Utterance] = field(default_factory=dict)
    events: list[EmotionEvent] = field(default_factory=list)
    fault_at: float = 0.0
    """Wall time of the fault."""
    drained: bool = False
    """Every service had committed all its input, and the reader had read it all (``Drain``)."""
    not_drained: str = ""
    """When it never drained: what was still missing or in flight at the deadline."""
    uncommitted_at_kill: int = 0
    """A killed service: the input its group had not committed when it was killed (taken up again
    from the committed offsets by the new instance)."""
    logged_after_fault: str = ""
    """What the services logged from the fault on."""
    streamed_at: dict[str, float] = field(default_factory=dict)
    """Wall time each call's first chunk was sent (in real time: second t of it is sent t later)."""

    def latencies(self) -> dict[str, float]:
        """Per utterance: its first event's time after the end of its audio was sent."""
        first: dict[str, float] = {}
        for e in self.events:
            first[e.utterance_id] = min(first.get(e.utterance_id, e.created_at), e.created_at)
        return {
            uid: first[uid] - (self.streamed_at[u.call_id] + u.end)
            for uid, u in self.utterances.items()
            if uid in first
        }


RETRIED = re.compile(
    r"not processed \(.*\); retrying in"  # a dependency failed: the batches in flight dropped, rewound, retried
    r"|poll failed \(.*\); trying again"  # the broker did not answer a poll
    r"|triton \S+ unavailable .*; retry \d+/\d+"  # an inference request retried
    r"|redis unavailable .*; running without cache"  # the feature cache bypassed until Redis is back
    r"|failed by its bound after .*; the caller retries"  # a Kafka call that hung, retried
    r"|kafka\.\S+: (?:Connection failed: |No node available for metadata refresh - backoff/retry)"
)
"""What a service logs when it meets a failed dependency and retries (shared/runtime.py,
shared/triton_client.py, shared/cache.py, shared/kafka_io.py), or its Kafka client does while it
reconnects to a restarting broker (kafka-python)."""


def _inject(s, services, fault: str, run: Run) -> None:
    from benchmarks.monitor import LagSampler
    from benchmarks.pipeline import pipeline_inputs
    from deploy.local import stack

    if fault in PIPELINE:
        # frozen first, so that input is waiting uncommitted when it dies: the kill always interrupts
        # work, and the new instance must take it up again from the group's committed offsets
        os.killpg(services.get(fault).proc.pid, signal.SIGSTOP)
        lag = LagSampler(s, pipeline_inputs(s))
        try:
            deadline = time.monotonic() + 120
            while not run.uncommitted_at_kill and time.monotonic() < deadline:
                run.uncommitted_at_kill = lag.lag()[fault]
                time.sleep(0.2)
        finally:
            lag.close()
        services.kill(fault)
        services.respawn(fault, timeout_s=300)
    elif fault == "redis":
        stack.down(s, ["redis"])
        time.sleep(5)  # the services meet a dead Redis: cache bypassed, state operations retried
        stack.up(s, ["redis"], timeout_s=120)
    else:
        stack.down(s, [fault])
        stack.up(s, [fault], timeout_s=600)


def _stream_with_fault(s, services, tmp_path, fault: str) -> Run:
    from benchmarks.workload import segment_call
    from emotion.publish import load_call, publish_calls
    from shared.kafka_io import TailReader
    from training.data.calls import generate_calls

    # other audio for each fault: a transcript cached from an earlier fault would spare Whisper
    seed = SEED + FAULTS.index(fault)
    calls = generate_calls(
        tmp_path, 2, seed=seed, utterances_per_call=(3, 4), call_prefix=f"fault-{fault}", progress=False
    )
    # the utterances the service's own segmenter cuts from this audio, with no fault
    run = Run({c.call_id: len(segment_call(c, s.segmentation)) for c in calls})
    reader = TailReader(s, [s.topics.utterances, s.topics.emotions])
    published: list = []
    publisher = threading.Thread(
        target=lambda: published.append(
            publish_calls(
                s,
                [load_call(c.path, language=c.language) for c in calls],
                pace="realtime",
                progress=False,
                on_sent=lambda chunk: run.streamed_at.setdefault(chunk.call_id, time.time()),
            )
        )
    )
    publisher.start()
    injector: threading.Thread | None = None
    drain: Drain | None = None
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            for records in reader.poll(500).values():
                for r in records:
                    if r.topic == s.topics.utterances:
                        u = decode(r.value, Utterance)
                        run.utterances.setdefault(u.utterance_id, u)
                    else:
                        run.events.append(decode(r.value, EmotionEvent))
            # the fault: once the service has shown work on these calls (mid-call, mid-stream)
            progressed = (
                run.events if fault in ("text_encoder", "speech_encoder", "graph_gat", "moe_fusion") else run.utterances
            )
            if injector is None and progressed:
                run.fault_at = time.time()
                logs_at_fault = {p.log_path: p.log_path.stat().st_size for p in services.processes}
                injector = threading.Thread(target=_inject, args=(s, services, fault, run))
                injector.start()
            if injector is not None and not injector.is_alive():
                services.check()
                answered = {e.utterance_id for e in run.events}
                complete = len(run.utterances) >= sum(run.turns.values()) and set(run.utterances) <= answered
                if complete and published:
                    drain = drain or Drain(s)  # made after the fault: its clients never met it
                    if drain.reached(reader):
                        run.drained = True
                        break
        answered = {e.utterance_id for e in run.events}
        run.not_drained = (
            drain.why_not()
            if drain is not None
            else (
                f"{len(run.utterances)} of {sum(run.turns.values())} utterances read, "
                f"{len(set(run.utterances) & answered)} of them answered; the publisher "
                f"{'had' if published else 'had not'} finished"
            )
        )
    finally:
        if drain is not None:
            drain.close()
        reader.close()
        publisher.join(timeout=120)
        if injector is not None:
            injector.join(timeout=600)
            run.logged_after_fault = "".join(_read_from(path, at) for path, at in logs_at_fault.items())
    assert published and published[0].ok, f"the publisher failed: {published and published[0].failures}"
    return run


FAULTS = [*PIPELINE, "kafka", "triton", "redis"]


def _read_from(path, offset: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def _log_tails(services, lines: int = 25) -> str:
    """The last lines of every service's log: what a failed run needs to be understood."""
    from deploy.local.process import tail

    return "\n".join(f"--- {p.label}: {p.log_path}\n{tail(p.log_path, lines)}" for p in services.processes)


@pytest.mark.parametrize("fault", FAULTS, ids=[f"kill-{f}" if f in PIPELINE else f"restart-{f}" for f in FAULTS])
def test_one_event_per_utterance_through_the_fault(pipeline, tmp_path, fault):
    s, services = pipeline
    run = _stream_with_fault(s, services, tmp_path, fault)
    assert run.fault_at, "the fault was never injected (no progress on the calls)"
    assert run.drained, f"the pipeline never drained after the fault: {run.not_drained}\n" + _log_tails(services)
    # the fault met work in progress, and the recovery path ran
    retries = RETRIED.findall(run.logged_after_fault)
    if fault in PIPELINE:
        assert run.uncommitted_at_kill > 0, f"{fault} had no uncommitted input when it was killed"
    else:
        assert retries, f"no service logged a retry after the {fault} restart:\n" + run.logged_after_fault[-3000:]
    expected = {f"{call_id}:{i:05d}" for call_id, n in run.turns.items() for i in range(n)}
    assert set(run.utterances) == expected, "the utterances of a run without a fault: none lost, none added by a replay"
    by_utterance: dict[str, list[EmotionEvent]] = collections.defaultdict(list)
    for e in run.events:
        by_utterance[e.utterance_id].append(e)
    assert set(by_utterance) == expected, f"unanswered: {sorted(expected - set(by_utterance))}"
    for utterance_id, events in by_utterance.items():
        assert {e.message_id for e in events} == {EmotionEvent.event_id(utterance_id, events[0].model_version)}, (
            "a repeated event carries the same idempotent id"
        )
        assert len({e.label for e in events}) == 1, "a repeated event says the same"
    deduplicated = {e.message_id: e for e in run.events}
    assert len(deduplicated) == len(expected), "after consumer-side de-duplication: exactly one event per utterance"
    repeats = len(run.events) - len(deduplicated)
    latency = sorted(run.latencies().values())
    print(
        f"\nFAULT {fault}: {len(expected)} utterances, {repeats} repeated event(s) on the topic, "
        f"{run.uncommitted_at_kill} message(s) uncommitted at the kill, {len(retries)} retry log line(s); end of speech to "
        f"event: median {latency[len(latency) // 2]:.1f} s, slowest {latency[-1]:.1f} s"
    )
    if fault == "redis":  # the cache is used again once Redis is back (not inline audio from then on)
        import redis

        last = max(run.utterances.values(), key=lambda u: u.created_at)
        assert last.audio_key and last.audio is None, "the last utterance's audio went through the cache again"
        client = redis.Redis(host=s.redis.host, port=s.redis.port, password=s.redis_password)
        assert client.exists(last.audio_key)
        client.close()
