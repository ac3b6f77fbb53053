"""Finding a model of the bundle (``resolve``): where it is and which version it is.

Resolution order for a model ``name`` (or the configured model of a role):

1. ``settings.models_dir/<name>``: an assembled model (recorded in ``bundle.json``, checksums
   verified) or a directory the user placed there (checked and recorded by ``fetch``);
2. the Hugging Face cache (models with a Hub id, i.e. the ``paper`` profile).

Never the Hub itself: only ``fetch`` (:mod:`training.bundle`) assembles, and downloads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BundleError
from .hub import cached_snapshot
from .manifest import BundleManifest, ModelRecord, bundle_lock, hash_directory, model_version, tree_digest
from .registry import get_spec, model_name
from .spec import missing_files

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

log = logging.getLogger("training.bundle")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model of the bundle is and which version it is."""

    name: str
    role: str
    path: Path
    version: str
    """``<name>@<first 12 hex of the content digest>``: use it in cache keys."""
    profile: str
    fmt: str
    source: str
    """``bundle`` (assembled, checksums verified), ``local-dir`` (placed by the user, not yet
    recorded by ``fetch``) or ``hf-cache``."""
    random: bool
    licence: str
    options: Mapping[str, Any] = field(default_factory=dict)
    record: ModelRecord | None = field(default=None, repr=False)


def resolve(settings: Settings, role_or_name: str) -> ResolvedModel:
    """Find a model (by role or name): ``models_dir/<name>``, else the Hugging Face cache.

    Never downloads: a model that is not there is a :class:`BundleError` that says how to fetch it.
    """
    name = model_name(settings, role_or_name)
    spec = get_spec(name)
    models_dir = settings.models_dir
    path = models_dir / name

    def resolved(where: Path, version: str, source: str, record: ModelRecord | None = None) -> ResolvedModel:
        return ResolvedModel(
            name=name,
            role=spec.role,
            path=where,
            version=version,
            profile=spec.profile,
            fmt=spec.fmt,
            source=source,
            random=spec.random,
            licence=spec.licence,
            options=dict(spec.options),
            record=record,
        )

    if path.is_dir():
        manifest = BundleManifest.load(models_dir)
        record = manifest.models.get(name)
        if record is not None:
            if record.verify(path):  # files re-hashed after an mtime change: remember the new stamps
                try:
                    with bundle_lock(models_dir):
                        manifest.save()
                except OSError as e:  # e.g. a read-only bundle: verification still happened
                    log.debug("could not refresh the stamps in %s: %s", manifest.path, e)
            return resolved(path, record.version, "bundle", record)
        if missing := missing_files(spec, path):
            raise BundleError(f"{path} is not a complete {spec.fmt} model for {name}: missing {', '.join(missing)}")
        log.warning(
            "%s: %s is not recorded in %s; run `emotion models fetch` to check and record it",
            name,
            path,
            manifest.path.name,
        )
        return resolved(path, model_version(name, tree_digest(hash_directory(path))), "local-dir")
    if spec.hub_id and spec.profile != "offline":
        if snap := cached_snapshot(spec.hub_id, spec.required_files):
            return resolved(snap, model_version(name, tree_digest(hash_directory(snap))), "hf-cache")
    profile = spec.profile if spec.profile != "tiny" else None
    how = f"`emotion models fetch --profile {profile}`" if profile else "training.bundle.make_tiny_bundle(dir)"
    raise BundleError(f"model {name!r} ({spec.role}) is not in the bundle at {path}; assemble it with {how}")
