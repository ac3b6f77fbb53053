"""``emotion``: the one command of the platform.

Every subcommand reads the same typed settings (:mod:`shared.settings`); environment variables
``EMOTION_*`` override the defaults, and the global flags below override both.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.logs import configure_logging
from shared.settings import load_settings

log = logging.getLogger("emotion")


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help (for ``emotion --help``, which imports no command module)
    and the module that owns the rest: ``add_arguments(parser)``, which sets the description and
    the arguments, and ``main(args, settings) -> exit status``."""

    name: str
    help: str
    module: str

    def configure(self, parser: argparse.ArgumentParser) -> None:
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as e:  # an image that holds only some packages (deploy/docker)
            if (e.name or "").partition(".")[0] not in OPTIONAL_PACKAGES:
                raise
            raise SystemExit(missing_package(f"emotion {self.name}", e)) from None
        mod.add_arguments(parser)
        parser.set_defaults(func=mod.main)


OPTIONAL_PACKAGES = ("training", "deploy", "benchmarks")
"""Packages an installation may lack: the services image (deploy/docker/emotion.Dockerfile,
target ``services``) holds shared/, services/ and this package only."""


def missing_package(what: str, error: ModuleNotFoundError) -> str:
    """The message for ``what`` needing a package this installation does not hold."""
    package = (error.name or "").partition(".")[0]
    return (
        f"{what} needs the project's `{package}` package, which this installation does not hold "
        "(the services image runs the streaming services only; the tools image, or a checkout, has everything)"
    )


COMMANDS: tuple[Command, ...] = (
    Command("stack", "start, stop or inspect the local stack", "deploy.local.stack_command"),
    Command("models", "assemble, list or verify the model bundle", "training.bundle.command"),
    Command("export", "write the versioned Triton model repository (all five models)", "training.serving.export"),
    Command("train", "train an emotion model (default: the proposed model on the synthetic corpus)", "training.train"),
    Command("eval", "evaluate a trained model on any manifest", "training.evaluate"),
    Command(
        "data",
        "turn public emotion corpora (RAVDESS, CREMA-D, TESS, MELD, DailyDialog, GoEmotions) into manifests",
        "training.data.prepare",
    ),
    Command("compare", "the paper's comparison table over seeds", "training.compare"),
    Command("profile", "parameter counts and per-utterance latencies of the fusion models", "training.models.profile"),
    Command("contracts", "the message contract of each topic, as JSON Schema", "services.contract_schemas"),
    Command("serve", "run one streaming service", "services.serve"),
    Command(
        "publish",
        "stream call audio (files, folders, manifests, raw PCM, synthetic calls) into calls.audio",
        "emotion.publish",
    ),
    Command(
        "consume",
        "read emotion events (table or JSON lines, per-call summary with escalations)",
        "services.event_reader",
    ),
    Command("dashboard", "the operators' live dashboard (throughput, lag, latency, emotions)", "services.dashboard"),
    Command("grafana", "write the Grafana dashboard JSON from the code (or --check it)", "services.dashboard.grafana"),
    Command("bench", "benchmarks: throughput, latency and cost against their ceilings", "benchmarks.run"),
    Command("report", "re-render a benchmark report and its plots from its results JSON", "benchmarks.report"),
    Command(
        "soak",
        "load: N calls in real time for M minutes; is lag bounded, memory flat, every utterance answered?",
        "benchmarks.soak",
    ),
    Command(
        "kafka-restarts",
        "stress: do Kafka client calls stay bounded while the broker restarts?",
        "benchmarks.kafka_restarts",
    ),
    Command(
        "prosody-probe",
        "benchmark: how well do prosodic and speech-encoder features tell emotions apart on unseen speakers?",
        "benchmarks.prosody_probe",
    ),
    Command("demo", "the main job: calls in, emotion events out, on the local stack", "emotion.demo"),
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
        parser = sub.add_parser(c.name, help=c.help, description=c.help)
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
