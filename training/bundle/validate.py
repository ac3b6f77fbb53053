"""Load checks run on every model directory before it enters the bundle (built or user-provided).

The checks load the directory with the project's own encoders, so a model that passes is one the
services can use: right files, right shapes, finite outputs and, for real (non-random) text
encoders, semantically sensible sentence vectors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..model_store.errors import BundleError
from ..model_store.manifest import CheckResult
from ..model_store.spec import ModelSpec, missing_files

log = logging.getLogger("training.bundle")

SANITY_SENTENCES: dict[str, tuple[str, str, str]] = {
    # (angry, angry paraphrase, unrelated calm sentence)
    "en": (
        "I am furious that you cancelled my order again!",
        "This is outrageous, I am so angry with your service.",
        "The weather is sunny and mild this afternoon.",
    ),
    "ko": (
        "주문을 또 취소하다니 정말 화가 나요!",
        "너무 짜증나고 분노가 치밀어요.",
        "오늘 오후에는 날씨가 맑고 따뜻합니다.",
    ),
}


def validate(spec: ModelSpec, directory: Path, *, threads: int = 2) -> list[CheckResult]:
    """Checks for ``directory`` as a model of ``spec`` (raises :class:`BundleError` on missing files)."""
    if missing := missing_files(spec, directory):
        raise BundleError(
            f"{directory} is not a complete {spec.fmt} model for {spec.name}: missing {', '.join(missing)}"
        )
    if spec.fmt == "ct2-whisper":
        return _validate_ct2_whisper(spec, directory, threads)
    if spec.fmt == "hf-text":
        return _validate_text(spec, directory, threads)
    return _validate_speech(spec, directory, threads)


def _validate_ct2_whisper(spec: ModelSpec, directory: Path, threads: int) -> list[CheckResult]:
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    from ..encoders.audio import synthetic_speech

    model = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="int8", intra_threads=threads)
    english_only = bool(spec.options.get("english_only", False))
    checks = [
        CheckResult("ct2_load", True, detail=f"ctranslate2 {ctranslate2.__version__} loads it (int8, cpu)"),
        CheckResult(
            "multilingual",
            model.is_multilingual != english_only,
            detail=f"is_multilingual={model.is_multilingual}, expected {not english_only}",
        ),
    ]
    fe = FeatureExtractor(feature_size=model.n_mels)
    feats = fe(synthetic_speech(1.0, seed=3))[:, :100]
    out = np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None])), to_cpu=True))
    checks.append(
        CheckResult(
            "ct2_encode_1s",
            out.shape[:2] == (1, 50) and bool(np.isfinite(out).all()),
            detail=f"encoder output {out.shape}, finite={bool(np.isfinite(out).all())}",
        )
    )
    return checks


def _validate_text(spec: ModelSpec, directory: Path, threads: int) -> list[CheckResult]:
    from ..encoders.text import TextEncoder

    enc = TextEncoder(
        directory,
        name=spec.name,
        version="unverified",
        prefix=str(spec.options.get("prefix", "")),
        max_tokens=128,
        device="cpu",
        threads=threads,
    )
    short, long = "Hello, how can I help you today?", " ".join(["please check my invoice"] * 80)
    out = enc.encode([short, long])
    ok_shape = out.hidden.shape == (2, 128, enc.dim) and out.offsets.shape == (2, 128, 2)
    finite = bool(np.isfinite(out.hidden).all())
    checks = [
        CheckResult(
            "text_encode",
            ok_shape and finite and bool(out.mask[1].all()),
            detail=f"hidden {out.hidden.shape}, finite={finite}, long text fills {int(out.mask[1].sum())}/128",
        ),
        offsets_check(short, out.offsets[0]),
    ]
    if not spec.random:
        for lang in spec.options.get("languages", ("en",)):
            angry, angry2, calm = SANITY_SENTENCES[lang]
            v = enc.encode([angry, angry2, calm]).pooled()
            near, far = float(v[0] @ v[1]), float(v[0] @ v[2])
            checks.append(
                CheckResult(
                    f"semantic_{lang}",
                    near > far,
                    near - far,
                    0.0,
                    f"cos(angry, angry')={near:.3f} > cos(angry, calm)={far:.3f}",
                )
            )
    return checks


def offsets_check(text: str, offsets: np.ndarray) -> CheckResult:
    """Token spans lie inside ``text``, start in order and cover every non-space character."""
    spans = [(int(s), int(e)) for s, e in offsets if e > s]
    inside = all(0 <= s < e <= len(text) for s, e in spans)
    ordered = all(a[0] <= b[0] for a, b in zip(spans, spans[1:]))
    covered = set().union(*(range(s, e) for s, e in spans)) if spans else set()
    uncovered = [i for i, ch in enumerate(text) if not ch.isspace() and i not in covered]
    return CheckResult(
        "text_offsets",
        bool(spans) and inside and ordered and not uncovered,
        detail=f"{len(spans)} spans, first {[text[s:e] for s, e in spans[:5]]}, uncovered chars {uncovered[:5]}",
    )


def _validate_speech(spec: ModelSpec, directory: Path, threads: int) -> list[CheckResult]:
    from ..encoders.audio import synthetic_speech
    from ..encoders.speech import SpeechEncoder

    enc = SpeechEncoder(directory, name=spec.name, version="unverified", max_frames=128, device="cpu", threads=threads)
    out = enc.encode([synthetic_speech(1.0, seed=4), synthetic_speech(4.0, seed=5)])
    finite = bool(np.isfinite(out.frames).all())
    n_short, n_long = int(out.mask[0].sum()), int(out.mask[1].sum())
    expected_short = round(1.0 * enc.frames_per_second)
    ok = out.frames.shape == (2, 128, enc.dim) and finite and abs(n_short - expected_short) <= 1 and n_long == 128
    return [
        CheckResult(
            "speech_encode",
            ok,
            detail=f"frames {out.frames.shape}, finite={finite}, 1 s -> {n_short} frames "
            f"(expected ~{expected_short}), 4 s -> pooled {n_long}",
        )
    ]
