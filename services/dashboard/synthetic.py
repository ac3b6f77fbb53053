"""Synthetic traffic for the dashboard: fake service metrics and scripted emotion events.

For tests, demos and screenshots without the full pipeline running::

    emotion dashboard --synthetic-traffic           # against the stack of the settings, until Ctrl-C

* :class:`SyntheticServices` serves one :class:`shared.metrics.ServiceMetrics` per named service on
  a free port, registers each as a Prometheus scrape target (exactly as the shared runtime does)
  and moves the metrics every ``interval_s``: messages, audio seconds, batch sizes, stage
  latencies, lag, cache look-ups, utterances pending in the joins (``graph_gat``, ``moe_fusion``),
  and a fixed number of errors and dead letters.  :meth:`SyntheticServices.emit` produces emotion
  events and counts them on ``moe_fusion``'s metrics (``emotion_events_total`` and
  ``emotion_event_latency_seconds``), as the real fusion service does.
* :func:`scripted_call` builds the :class:`shared.contracts.EmotionEvent` of a call from a script
  of ``(speaker, label, transcript)`` turns, with the pipeline's utterance ids
  (``<call_id>:<index:05d>``); :data:`ESCALATING`, :data:`CALM` and :data:`WORRIED` are such scripts.
  Under :func:`services.escalation.detect_escalation`, ESCALATING ends with an ongoing escalation (the
  customer negative three times in a row) and neither CALM nor WORRIED escalates: a label has 0.55 to
  0.92 of the probability, so a customer who is never negative keeps the negative probability under
  :data:`services.escalation.RISING_MIN_FINAL` and cannot trip the rising-trend rule.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Sequence

from shared.contracts import EmotionEvent
from shared.metrics import FileScrapeTargets, ServiceMetrics
from shared.runtime import ScrapeTargets
from shared.settings import EMOTIONS, Settings

Turn = tuple[str, str, str]

ESCALATING: list[Turn] = [
    ("agent", "neutral", "Thank you for calling, how can I help you today?"),
    ("customer", "neutral", "Hi, I have a question about my last bill."),
    ("agent", "neutral", "Of course, let me pull up your account."),
    ("customer", "anger", "You charged me twice for the same month again!"),
    ("agent", "neutral", "I am sorry about that, I can see the duplicate charge."),
    ("customer", "disgust", "This is the third time, honestly it is ridiculous."),
    ("customer", "sadness", "I just cannot keep dealing with this every month."),
]
CALM: list[Turn] = [
    ("agent", "neutral", "Good morning, you are speaking with Mina."),
    ("customer", "happiness", "Hi! I wanted to say the new plan works great."),
    ("agent", "happiness", "That is wonderful to hear, thank you!"),
    ("customer", "surprise", "Oh, I did not know roaming was included too."),
    ("customer", "happiness", "Perfect, that is all I needed."),
]
WORRIED: list[Turn] = [
    ("agent", "neutral", "Support desk, how can I help?"),
    ("customer", "fear", "My card was used somewhere I have never been."),
    ("agent", "neutral", "I will block it right away and open a claim."),
    ("customer", "neutral", "Okay. Will I get the money back?"),
    ("agent", "happiness", "Yes, the claim covers the full amount."),
]


def scripted_call(
    call_id: str,
    script: Sequence[Turn],
    model_version: str = "synthetic-1",
    created_at: float | None = None,
    seed: int = 0,
) -> list[EmotionEvent]:
    """The emotion events of one call: turns back to back, about 0.06 s per character; the label has
    0.55 to 0.92 of the probability, the other emotions share the rest at random."""
    rng = random.Random(f"{call_id}-{seed}")
    created = time.time() if created_at is None else created_at
    t, events = 0.0, []
    for i, (speaker, label, text) in enumerate(script):
        dur = round(1.2 + 0.06 * len(text) + rng.uniform(0, 0.8), 2)
        top = rng.uniform(0.55, 0.92)
        rest = [e for e in EMOTIONS if e != label]
        weights = [rng.random() for _ in rest]
        probs = {label: round(top, 4)} | {e: round((1 - top) * w / sum(weights), 4) for e, w in zip(rest, weights)}
        events.append(
            EmotionEvent(
                call_id=call_id,
                utterance_id=f"{call_id}:{i:05d}",
                speaker=speaker,
                start=round(t, 2),
                end=round(t + dur, 2),
                transcript=text,
                label=label,
                probabilities=probs,
                model_version=model_version,
                latency_ms={"asr": round(rng.uniform(80, 300), 1), "fusion": round(rng.uniform(5, 30), 1)},
                created_at=created - 0.5 * (len(script) - i),
            )
        )
        t += dur + rng.uniform(0.2, 0.9)
    return events


def produce_events(settings: Settings, events: Sequence[EmotionEvent]) -> None:
    """Send events to the emotions topic (keyed by call id) and wait for the acks."""
    from shared.kafka_io import make_producer

    producer = make_producer(settings)
    try:
        futures = [producer.send(settings.topics.emotions, key=e.key, value=e.encode()) for e in events]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=10)


# input topic, rough per-batch seconds of the "process" stage, audio seconds per message
_PROFILE = {
    "asr_alignment": ("calls.audio", 0.35, 0.5),
    "text_encoder": ("utterances", 0.04, 0.0),
    "speech_encoder": ("utterances", 0.12, 3.0),
    "graph_gat": ("features.text", 0.02, 0.0),
    "moe_fusion": ("features.graph", 0.01, 0.0),
}

_JOINS = ("graph_gat", "moe_fusion")
"""The services that join several inputs per utterance (and export ``emotion_join_pending``)."""


class SyntheticServices:
    """Fake streaming services whose metrics Prometheus scrapes (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] = ("asr_alignment", "text_encoder"),
        interval_s: float = 0.25,
        errors: int = 2,
        deadletters: int = 1,
        seed: int = 0,
        scrape_targets: ScrapeTargets | None = None,
    ):
        self.settings = settings
        self.scrape_targets = scrape_targets
        """Where Prometheus learns of each fake service (None: nowhere)."""
        self.services = list(services)
        self.interval_s = interval_s
        self.errors = errors
        self.deadletters = deadletters
        self.rng = random.Random(seed)
        self.metrics = {s: ServiceMetrics(s) for s in self.services}
        self.messages = {s: 0 for s in self.services}
        self._servers: list = []
        self._targets: list = []
        self.instance_ids: list[str] = []
        """The ``instance_id`` each fake service was announced to Prometheus with (with ``scrape_targets``)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SyntheticServices":
        from prometheus_client import start_http_server

        host = self.settings.runtime.metrics_host
        for name, m in self.metrics.items():
            server, _thread = start_http_server(0, addr=host, registry=m.registry)
            self._servers.append(server)
            port = server.server_address[1]
            if self.scrape_targets is not None:
                self.instance_ids.append(f"synthetic-{uuid.uuid4().hex[:6]}")
                self._targets.append(self.scrape_targets.register(name, self.instance_ids[-1], port))
            m.up.labels(name).set(1)
            if name == "moe_fusion":  # exported at 0 from the start, so that a rate sees the first events
                m.event_latency.labels(name)
            topic = _PROFILE.get(name, ("utterances", 0.05, 0.0))[0]
            for kind in range(self.errors):
                m.errors.labels(name, "KafkaTimeoutError" if kind % 2 else "InferenceServerException").inc()
                if kind % 2:  # that timeout was a consumer call failed by its bound
                    m.kafka_calls_bounded.labels(name, "consumer").inc()
            for _ in range(self.deadletters):
                m.deadletters.labels(name, "ContractError").inc()
                m.messages.labels(name, topic, "deadletter").inc()
        self._thread = threading.Thread(target=self._run, name="synthetic-services", daemon=True)
        self._thread.start()
        return self

    def tick(self) -> None:
        """One step of traffic for every service."""
        rng = self.rng
        for name, m in self.metrics.items():
            topic, process_s, audio_per_msg = _PROFILE.get(name, ("utterances", 0.05, 0.0))
            batch = rng.choice((1, 2, 4, 4, 8, 8, 16))
            m.messages.labels(name, topic, "ok").inc(batch)
            self.messages[name] += batch
            m.batch_size.labels(name).observe(batch)
            stages = {
                "decode": 0.0004 * batch,
                "process": process_s * rng.uniform(0.6, 1.6),
                "produce": rng.uniform(0.002, 0.01),
                "commit": rng.uniform(0.001, 0.004),
            }
            for stage, sec in stages.items():
                m.stage_seconds.labels(name, stage).observe(sec)
            m.stage_seconds.labels(name, "total").observe(sum(stages.values()))
            if audio_per_msg:
                m.audio_seconds.labels(name).inc(batch * audio_per_msg * rng.uniform(0.8, 1.2))
            for p in range(2):
                m.lag.labels(name, topic, str(p)).set(rng.randint(0, 40) + (150 if name == "asr_alignment" else 0))
            m.cache.labels(name, "hit" if rng.random() < 0.3 else "miss").inc()
            m.produced.labels(name, "features." + name).inc(batch)
            if name in _JOINS:
                m.join_pending.labels(name).set(rng.randint(0, 6))

    def emit(self, events: Sequence[EmotionEvent]) -> None:
        """Produce ``events`` to the emotions topic and, when ``moe_fusion`` is one of the services,
        count each on its ``emotion_events_total`` and ``emotion_event_latency_seconds``."""
        produce_events(self.settings, events)
        fusion = self.metrics.get("moe_fusion")
        if fusion is None:
            return
        for e in events:
            fusion.events.labels("moe_fusion", e.label, e.speaker).inc()
            fusion.event_latency.labels("moe_fusion").observe(sum(e.latency_ms.values()) / 1000)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for m in self.metrics.values():
            m.up.labels(m.service).set(0)
        for target in self._targets:
            self.scrape_targets.unregister(target)  # type: ignore[union-attr]
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "SyntheticServices":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SyntheticTraffic:
    """Fake metrics for every service, announced to the stack's Prometheus, and a new scripted call
    every ``every_s`` seconds (ESCALATING, CALM, WORRIED in turn) while :meth:`tick` is called."""

    def __init__(self, settings: Settings, every_s: float = 5.0) -> None:
        self.services = list(_PROFILE)
        self._fake = SyntheticServices(settings, services=self.services, scrape_targets=FileScrapeTargets(settings))
        self.every_s = every_s
        self.calls = 0
        self._next = 0.0

    def tick(self) -> None:
        """Emit the next scripted call when it is due."""
        now = time.monotonic()
        if now >= self._next:
            script = (ESCALATING, CALM, WORRIED)[self.calls % 3]
            self._fake.emit(scripted_call(f"call-{uuid.uuid4().hex[:6]}", script))
            self.calls += 1
            self._next = now + self.every_s

    def __enter__(self) -> "SyntheticTraffic":
        self._fake.start()
        return self

    def __exit__(self, *exc) -> None:
        self._fake.stop()
