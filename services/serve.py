"""``emotion serve NAME``: run one streaming service on the shared runtime until SIGTERM/Ctrl-C."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shared.logs import configure_logging
from shared.metrics import FileScrapeTargets
from shared.settings import Settings

SERVICE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""A service does I/O and light numpy between Triton calls: one BLAS/OpenMP thread each, so that
idle worker threads of five service processes never compete with the models for the cores."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from services.registry import SERVICES

    parser.description = (
        "Run a streaming service on the shared runtime until SIGTERM/Ctrl-C: consume, batch, infer through "
        "Triton, produce, commit, expose Prometheus metrics."
    )
    parser.add_argument("name", choices=sorted(SERVICES))
    parser.add_argument(
        "--group", help="Kafka consumer group (default: emotion-<name>); instances in one group split the partitions"
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        help="write the instance id to this file once the service consumes (for supervisors and readiness probes)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    for variable in SERVICE_THREAD_VARIABLES:  # before numpy is imported
        os.environ.setdefault(variable, "1")
    from services.registry import SERVICES
    from shared.runtime import ServiceRuntime

    configure_logging(settings.runtime.log_level, settings.runtime.log_format, service=args.name)
    # Prometheus finds the instance by file-based discovery, unless it finds pods itself (Kubernetes)
    targets = FileScrapeTargets(settings) if settings.runtime.register_scrape_target else None
    runtime = ServiceRuntime(SERVICES[args.name](settings), settings, group_id=args.group, scrape_targets=targets)
    runtime.install_signal_handlers()
    runtime.run(ready_file=args.ready_file)
    return 0
