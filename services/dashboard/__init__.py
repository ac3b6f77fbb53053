"""The operators' dashboard (``emotion dashboard``): live throughput, lag, latency, failures,
the emotion mix and per-call timelines with escalations.  See :mod:`services.dashboard.server`."""

from .server import DashboardServer, add_arguments, main, run_dashboard

__all__ = ["DashboardServer", "add_arguments", "main", "run_dashboard"]
