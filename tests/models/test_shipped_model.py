"""The shipped default model still recognises emotions in real voices it never heard.

It is evaluated on the RAVDESS actors its recipe held out (read in place from
``../shared/datasets``, through the same simulated phone line, with the same ASR and speech encoder
layer it was trained with), and its weighted F1 must stay within :data:`MARGIN` of the figure its
model card states (``slices.json``, written by ``emotion eval --by corpus`` on the recipe's mix).
A change to feature extraction, the encoders, the speaker baselines or the model code that shifts
labels fails here. Skipped, with the reason, where the datasets folder is absent (CI has it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from training.checkpoint import load_model
from training.train import SHIPPED_MODEL

pytestmark = pytest.mark.models

DATASETS = Path(
    os.environ.get("EMOTION_DATASETS") or Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
)
MARGIN = 0.02
"""Features are deterministic (the phone line is drawn from each clip's id), so the figure is
reproduced up to ASR and float differences between CPUs."""
CHANCE = 1 / 7


@pytest.mark.timeout(1200)
def test_shipped_model_keeps_its_f1_on_held_out_ravdess_actors(bundle_settings, tmp_path):
    if not (DATASETS / "ravdess").is_dir():
        pytest.skip(f"RAVDESS is not at {DATASETS / 'ravdess'} (set EMOTION_DATASETS to the shared datasets folder)")
    from training.data.corpora import load_ravdess
    from training.data.manifest import split_examples
    from training.encoders.speech import SpeechReading
    from training.evaluate import evaluate
    from training.features import extract_features, feature_spec

    model, meta = load_model(SHIPPED_MODEL)
    card = json.loads((SHIPPED_MODEL / "slices.json").read_text())
    stated = card["by"]["groups"]["ravdess"]
    data = meta.training["config"]["data"]
    examples = split_examples(load_ravdess(DATASETS / "ravdess"), data["split_seed"], by=data["split_by"])
    held_out = [ex for ex in examples if ex.split == "test"]
    assert len(held_out) == stated["n"], "the recipe's split of RAVDESS actors changed"

    settings = SpeechReading.of_version(meta.encoders["speech_encoder"]).applied(bundle_settings)
    # the bundle this machine assembled is, byte for byte, the one the model was trained on
    assert feature_spec(settings, data["asr_model"]).encoders == meta.encoders
    records = extract_features(
        settings,
        held_out,
        tmp_path / "features",
        text_source=data["text_source"],
        workers=1,
        progress=False,
        asr_model=data["asr_model"],
        class_names=meta.class_names,
        channel=card["channel"],
    )
    metrics = evaluate(model, records)
    print(f"shipped model on {metrics.n} held-out RAVDESS clips: F1 {metrics.f1:.4f} (card: {stated['f1']:.4f})")
    assert metrics.f1 > 2.5 * CHANCE, "the shipped model no longer recognises emotion in real voices"
    assert abs(metrics.f1 - stated["f1"]) <= MARGIN, (metrics.f1, stated["f1"])
