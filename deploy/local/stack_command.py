"""``emotion stack``: start, stop or inspect the local stack (:mod:`deploy.local.stack`)."""

from __future__ import annotations

import argparse
import json
import sys

from shared.settings import Settings

COMPONENTS = ("kafka", "redis", "triton", "prometheus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Manage the real single-node stack on 127.0.0.1: Kafka (KRaft), Redis, Triton (Python backend) and "
        "Prometheus. Logs go to <home>/stacks/<name>/logs."
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "install"],
        help="up: start what is not running and wait until healthy; down: stop; "
        "status: health, pids, ports, memory (exit 1 if unhealthy); install: apt packages and Kafka jars",
    )
    parser.add_argument(
        "components", nargs="*", metavar="COMPONENT", help=f"subset of {', '.join(COMPONENTS)} (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.local import stack

    components = args.components or None
    unknown = set(components or ()) - set(COMPONENTS)
    if unknown:
        print(
            f"unknown component(s) {', '.join(sorted(unknown))}; choose from {', '.join(COMPONENTS)}", file=sys.stderr
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
