"""Kafka clients configured one way for the whole system.

* The producer is idempotent (kafka-python 3.0's default) with ``acks=all``, so a retried send
  never duplicates a record within a producer session.
* Every client authenticates with SASL/SCRAM (``settings.kafka.security_protocol``) as
  ``settings.kafka.username`` with :attr:`shared.settings.Settings.kafka_password`.
* Consumers never auto-commit: :class:`shared.runtime.ServiceRuntime` commits a batch's offsets
  only after every output of that batch has been acknowledged by the broker (at-least-once).
"""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared.settings import Settings

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict:
    """Connection and security options shared by every kafka-python client."""
    k = settings.kafka
    options = {
        "bootstrap_servers": k.bootstrap,
        "client_id": k.client_id,
        "request_timeout_ms": k.request_timeout_ms,
        "bootstrap_timeout_ms": 30_000,
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.username,
                       sasl_plain_password=settings.kafka_password)  # fmt: skip
    return options


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    """An idempotent producer (acks=all) sized for the contract's largest messages."""
    config = {
        **client_options(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": settings.kafka.max_message_bytes,
        "retries": 2_147_483_647,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(settings: Settings, group_id: str | None, topics: list[str] | None, **overrides) -> KafkaConsumer:
    """A consumer that never auto-commits; ``group_id=None`` gives a standalone reader."""
    config = {
        **client_options(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.runtime.max_batch,
        "fetch_max_wait_ms": 2000,  # the broker answers as soon as there is data; this only spaces idle fetches
        "fetch_max_bytes": max(52_428_800, settings.kafka.max_message_bytes),
        "max_partition_fetch_bytes": settings.kafka.max_message_bytes,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "max_poll_interval_ms": 300_000,
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    if topics:
        consumer.subscribe(topics)
    return consumer


def tail_reader(settings: Settings, topics: list[str]) -> KafkaConsumer:
    """A standalone reader (no group, nothing committed) of every partition of ``topics``,
    positioned at their current end (resolved now, so that whatever is produced next is read)."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, None, None)
    consumer.assign([TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [0])])
    consumer.seek_to_end()
    for tp in consumer.assignment():
        consumer.position(tp)
    return consumer


def make_admin(settings: Settings, **overrides) -> KafkaAdminClient:
    return KafkaAdminClient(**{**client_options(settings), **overrides})


def ensure_topics(settings: Settings, topics: list[str] | None = None, partitions: int | None = None) -> list[str]:
    """Create missing topics (idempotent) and wait until they exist; returns the ones created."""
    wanted = topics or settings.topics.all()
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name=t,
                            num_partitions=partitions or settings.kafka.num_partitions,
                            replication_factor=1,
                            topic_configs={"max.message.bytes": str(settings.kafka.max_message_bytes)},
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass
            admin.wait_for_topics(missing, timeout_ms=30_000)
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        admin.close()
