"""``emotion demo``, the main job.

For now (foundation): assemble the model bundle if needed, export the Triton repository, bring
the local stack up, start the text-encoding service as its own process (``emotion serve``),
stream utterances through Kafka and print what comes out, with the Prometheus URL.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from shared.contracts import TextFeatures, Utterance, decode
from shared.kafka_io import make_consumer, make_producer
from shared.settings import Settings

log = logging.getLogger("emotion.demo")

SAMPLE_UTTERANCES = [
    ("call-demo-1", "agent", "Thank you for calling, how can I help you today?"),
    ("call-demo-1", "customer", "I have been charged twice and nobody answers my emails!"),
    ("call-demo-2", "customer", "주문이 또 취소됐어요. 정말 화가 나요."),
]


def run_demo(settings: Settings, keep_running: bool = False, timeout_s: float = 180.0) -> int:
    from deploy.local import stack
    from training.serving.export import export_repository
    from training import bundle

    t0 = time.perf_counter()
    bundle.fetch(settings)
    export_repository(settings)
    status = stack.up(settings)
    print(status.table())
    log_path = settings.log_dir / "text_encoder.log"
    service = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "text_encoder"],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, env=os.environ.copy(),
    )
    consumer = producer = None
    try:
        consumer = make_consumer(settings, None, None)
        from kafka import TopicPartition

        parts = [TopicPartition(settings.topics.text_features, p)
                 for p in sorted(consumer.partitions_for_topic(settings.topics.text_features) or [0])]
        consumer.assign(parts)
        consumer.seek_to_end()
        for tp in parts:
            consumer.position(tp)
        producer = make_producer(settings)
        sent = {}
        for i, (call_id, speaker, text) in enumerate(SAMPLE_UTTERANCES):
            u = Utterance(call_id=call_id, utterance_id=f"{call_id}/{i}", index=i, speaker=speaker,
                          start=0.0, end=3.0, text=text)
            producer.send(settings.topics.utterances, key=u.key, value=u.encode())
            sent[u.utterance_id] = text
        producer.flush()
        print(f"published {len(sent)} utterances to {settings.topics.utterances}; waiting for {settings.topics.text_features} ...")
        deadline = time.monotonic() + timeout_s
        received: dict[str, TextFeatures] = {}
        while len(received) < len(sent) and time.monotonic() < deadline:
            if service.poll() is not None:
                print(f"text_encoder service exited with {service.returncode}; see {log_path}", file=sys.stderr)
                return 1
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    f = decode(r.value, TextFeatures)
                    if f.utterance_id in sent:
                        received[f.utterance_id] = f
                        hidden, mask = f.hidden.to_array(), f.mask.to_array()
                        print(f"  {f.utterance_id:16s} tokens={int(mask.sum()):3d} hidden={tuple(hidden.shape)} "
                              f"model={f.model_version} cached={f.cached}  {sent[f.utterance_id]!r}")
        if len(received) < len(sent):
            print(f"timed out: {len(received)}/{len(sent)} features arrived; see {log_path}", file=sys.stderr)
            return 1
        print(f"done in {time.perf_counter() - t0:.1f} s. Prometheus: http://{settings.prometheus.host}:{settings.prometheus.port}"
              f"/graph?g0.expr=emotion_messages_total  logs: {settings.log_dir}")
        return 0
    finally:
        for client in (consumer, producer):
            if client is not None:
                client.close()
        service.terminate()
        try:
            service.wait(timeout=settings.runtime.shutdown_timeout_s + 5)
        except subprocess.TimeoutExpired:
            service.kill()
        if not keep_running:
            stack.down(settings)
