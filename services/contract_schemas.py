"""``emotion contracts``: the message contracts of every topic, as JSON Schema.

A consumer written in another language (or with another Kafka client) validates the messages
of a topic against these schemas instead of importing :mod:`shared.contracts`.  The published
copies live in ``docs/contracts/`` (``emotion contracts --out docs/contracts`` writes them; a
unit test keeps them equal to the code).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from shared.contracts import CONTRACTS, Contract, json_schema
from shared.settings import Settings, TopicSettings

log = logging.getLogger(__name__)

TOPIC_FIELD: dict[str, str] = {
    "audio_chunk": "audio",
    "utterance": "utterances",
    "text_features": "text_features",
    "speech_features": "speech_features",
    "graph_features": "graph_features",
    "emotion_event": "emotions",
    "dead_letter": "deadletter",
}
"""Contract name -> the field of :class:`~shared.settings.TopicSettings` naming the topic that carries it."""


def schema_file_name(contract: type[Contract]) -> str:
    return f"{contract.contract}.v{contract.version}.schema.json"


def schema_text(contract: type[Contract]) -> str:
    """The schema as it is published: indented JSON, keys in the code's order, a final newline."""
    return json.dumps(json_schema(contract), indent=2, ensure_ascii=False) + "\n"


def newest(name: str) -> type[Contract]:
    versions = sorted(v for n, v in CONTRACTS if n == name)
    if not versions:
        raise KeyError(name)
    return CONTRACTS[(name, versions[-1])]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "List the versioned message contracts and the topics that carry them, print one contract's JSON Schema "
        "(draft 2020-12: what the services accept, the contract name and version pinned), or write them all "
        "with --out (the published copies are docs/contracts/). A consumer in any language validates a topic's "
        "messages with them."
    )
    p.add_argument(
        "name",
        nargs="?",
        choices=sorted({n for n, _ in CONTRACTS}),
        help="print this contract's JSON Schema (without NAME: list the contracts, their versions and topics)",
    )
    p.add_argument("--version", type=int, help="the contract version (default: the newest)")
    p.add_argument(
        "--out",
        type=Path,
        help="write every contract version's schema into this folder, "
        "one <name>.v<version>.schema.json each (e.g. docs/contracts)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for contract in CONTRACTS.values():
            (args.out / schema_file_name(contract)).write_text(schema_text(contract))
        log.info("wrote %d schemas to %s", len(CONTRACTS), args.out)
        return 0
    if args.name is None:
        topics: TopicSettings = settings.topics
        print(f"{'contract':<16} {'version':<8} {'topic':<18} schema")
        for (name, version), contract in sorted(CONTRACTS.items()):
            topic = getattr(topics, TOPIC_FIELD[name])
            print(f"{name:<16} {version:<8} {topic:<18} {schema_file_name(contract)}")
        return 0
    try:
        contract = CONTRACTS[(args.name, args.version)] if args.version is not None else newest(args.name)
    except KeyError:
        known = ", ".join(str(v) for n, v in sorted(CONTRACTS) if n == args.name)
        log.error("%s has no version %s; it has %s", args.name, args.version, known)
        return 2
    print(schema_text(contract), end="")
    return 0
