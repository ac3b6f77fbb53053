"""The real single-node local stack (Kafka KRaft, Redis, Triton, Prometheus) on 127.0.0.1.

See :mod:`deploy.local.stack` for the public API (``install``, ``up``, ``down``, ``status``).
Services announce themselves to its Prometheus with :class:`shared.metrics.FileScrapeTargets`.
Modules: ``process`` (detached processes, pid files, ports, waiting), ``component`` (the shared
life cycle), one module per component, ``stack`` (ordering and status).
"""
