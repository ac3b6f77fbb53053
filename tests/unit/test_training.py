"""The offline training package: feature cache, recipes, training, evaluation, comparison, CLI.

Fast by construction: hand-made features with small random arrays where the encoders do not
matter, and the tiny RANDOM bundle with a 21-utterance synthetic corpus where they do.
"""

from __future__ import annotations

import dataclasses

import argparse
import copy
import json
import math
import os
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from shared.settings import EMOTIONS, load_settings
from training.checkpoint import load_model, read_meta
from training.compare import ComparisonRecipe, findings, results_markdown, run_comparison
from training.evaluate import (
    breakdown,
    confusion_matrix_png,
    evaluate,
    metrics_from_predictions,
    predict,
    summarise_seeds,
)
from training.features import FeatureRecord, extract_features, feature_spec
from training.models import UtteranceFeatures, collate
from training.models.profile import synthetic_utterances
from training.train import DEFAULT_RECIPE, RECIPES_DIR, ConfigError, TrainConfig, save_trained, train

SMALL_MODEL = [
    "model.d_model=16",
    "model.gat_hidden=16",
    "model.gat_heads=2",
    "model.n_heads=2",
    "model.d_graph=16",
    "model.baseline_hidden=16",
]
QUIET = ["train.progress=false"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and immune to other processes on a shared 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---- hand-made features -------------------------------------------------------------------------------


def toy_features(
    n: int, seed: int = 0, signal: float = 2.0, split: str = "train", n_classes: int = 7
) -> list[FeatureRecord]:
    """Random utterances (16-d states, 16 tokens / frames) whose text and speech states carry a
    class-specific offset of size ``signal`` (0: labels unrelated to the inputs)."""
    base = synthetic_utterances(
        n, d_text=16, d_speech=16, max_tokens=16, max_frames=16, n_classes=n_classes, duration=(0.3, 1.0), seed=seed
    )
    centres = np.random.default_rng(1234).standard_normal((n_classes, 16)).astype(np.float32)
    out = []
    for i, u in enumerate(base):
        y = i % n_classes
        text = u.text_hidden + signal * centres[y] * u.text_mask[:, None]
        speech = u.speech_frames + signal * centres[y] * u.speech_mask[:, None]
        attrs = {f.name: getattr(u, f.name) for f in fields(UtteranceFeatures)}
        attrs.update(text_hidden=text.astype(np.float16), speech_frames=speech.astype(np.float16), label=y)
        out.append(
            FeatureRecord(
                **attrs,
                id=f"{split}-{seed}-{i}",
                split=split,
                language=("en", "ko")[i % 2],
                cue=("voice", "text", "both")[i % 3],
            )
        )
    return out


@pytest.fixture(scope="module")
def toy() -> dict[str, list[FeatureRecord]]:
    return {
        "train": toy_features(56, 0),
        "val": toy_features(21, 1, split="val"),
        "test": toy_features(21, 2, split="test"),
    }


def small_config(*overrides: str) -> TrainConfig:
    return TrainConfig.from_yaml(DEFAULT_RECIPE, [*SMALL_MODEL, *QUIET, *overrides])


# ---- recipes and overrides ----------------------------------------------------------------------------


def test_recipe_yaml_and_overrides():
    config = TrainConfig.from_yaml(DEFAULT_RECIPE)
    assert (config.model.name, config.train.lr, config.train.batch_size, config.train.epochs) == (
        "proposed",
        1e-4,
        32,
        100,
    )
    assert (config.train.patience, config.train.monitor, config.model.fusion["dropout"]) == (5, "val_f1", 0.1)
    changed = config.with_overrides(
        ["train.lr=3e-4", "model.top_k=2", "model.n_experts=4", "data.text_source=manifest"]
    )
    assert changed.train.lr == pytest.approx(3e-4) and isinstance(changed.train.lr, float)  # YAML reads "3e-4" as text
    fusion = changed.fusion_config(d_text=8, d_speech=8, max_tokens=4, max_frames=4)
    assert (fusion.ca_top_k, fusion.sp_top_k, fusion.n_experts) == (2, 2, 4)
    assert changed.data.text_source == "manifest" and config.train.lr == 1e-4  # the original is untouched
    assert TrainConfig.from_dict(changed.to_dict()).to_dict() == changed.to_dict()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"),
        ("model.expert=3", r"unknown key 'model.expert'"),
        ("optim.lr=1", r"unknown key 'optim.lr'"),
        ("train.epochs=1.5", r"train.epochs=1.5 must be an integer"),
        ("train.lr=fast", r"train.lr='fast' must be a number"),
        ("data.text_source=video", r"must be one of \['asr', 'manifest'\]"),
        ("model.name=transformer", r"not a registered model"),
        ("model.d_text=7", r"set from the features"),
        ("model.top_k=9", r"top-k 9 outside"),
        ("train.lr", r"not of the form section.key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_yaml(DEFAULT_RECIPE, [override])


def test_comparison_recipe_lists_the_papers_table():
    plan = ComparisonRecipe.from_yaml(RECIPES_DIR / "comparison.yaml", ["train.epochs=3"])
    models = [plan.config_for(r).model.name for r in plan.rows]
    assert sorted(set(models)) == sorted(
        ["bilstm_text", "cnn_speech", "mlp_graph", "early_fusion", "late_fusion", "ca_moe", "sp_moe", "proposed"]
    )
    top_k = {r.slug: plan.config_for(r).model.top_k for r in plan.rows if r.kind == "proposed"}
    assert top_k == {"proposed-top-1": 1, "proposed-top-2": 2}
    assert plan.seeds == (0, 1, 2, 3, 4) and all(plan.config_for(r).train.epochs == 3 for r in plan.rows)
    assert [r.slug for r in plan.select(["proposed"])] == ["proposed-top-1", "proposed-top-2"]


# ---- training -----------------------------------------------------------------------------------------


def test_training_reduces_loss_and_learns_a_separable_problem(toy):
    config = small_config("model.name=cnn_speech", "train.lr=3e-3", "train.epochs=8", "train.patience=8")
    model, history = train(config, toy["train"], toy["val"], seed=0)
    losses = [e.train_loss for e in history.epochs]
    assert losses[-1] < 0.5 * losses[0]
    assert evaluate(model, toy["test"]).accuracy > 0.8
    assert history.best_epoch == max(history.epochs, key=lambda e: (e.val_f1, -e.val_loss)).epoch


def test_the_shipped_recipes_model_learns_a_separable_problem_from_either_modality(toy):
    """The default recipe's proposed model (speaker normalisation, modality dropout, both MoE branches)
    learns: well above chance (1/7) on held-out utterances, and still from one modality alone."""
    from training.train import RECIPES_DIR

    config = TrainConfig.from_yaml(
        RECIPES_DIR / "default.yaml",
        [*SMALL_MODEL, *QUIET, "train.lr=3e-3", "train.epochs=10", "train.patience=10", "train.ca_schedule=constant"],
    )
    assert config.model.name == "proposed" and config.train.speech_dropout > 0
    model, _ = train(config, toy["train"], toy["val"], seed=0)
    assert evaluate(model, toy["test"]).accuracy > 0.8
    for keep in ("text", "speech"):  # the other modality's input masked out, as a text-only line arrives
        masked = [
            dataclasses.replace(
                r,
                **(
                    {"speech_mask": np.zeros_like(r.speech_mask)}
                    if keep == "text"
                    else {"text_mask": np.zeros_like(r.text_mask)}
                ),
            )
            for r in toy["test"]
        ]
        assert evaluate(model, masked).accuracy > 0.5, f"{keep} alone"


def test_early_stopping_after_patience_epochs_without_improvement(toy):
    noise_val = toy_features(21, 3, signal=0.0, split="val")  # nothing to learn about these labels
    config = small_config("model.name=sp_moe", "train.lr=3e-3", "train.epochs=60", "train.patience=2")
    _, history = train(config, toy["train"], noise_val, seed=0)
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + 2 < 60


def test_no_early_stop_during_the_ca_moe_warm_up(toy):
    noise_val = toy_features(14, 3, signal=0.0, split="val")
    config = small_config("model.name=ca_moe", "train.epochs=10", "train.patience=1", "train.lr=3e-3")
    _, history = train(config, toy["train"][:14], noise_val, seed=0)
    assert len(history.epochs) >= 3  # ceil(0.3 * 10): the OneCycle warm-up
    _, history = train(config.with_overrides(["train.min_epochs=1"]), toy["train"][:14], noise_val, seed=0)
    assert len(history.epochs) == history.best_epoch + 1


def test_same_seed_same_model_and_onecycle_only_on_ca_moe(toy):
    config = small_config("train.epochs=2", "train.patience=5")
    a, ha = train(config, toy["train"][:24], toy["val"], seed=7)
    b, hb = train(config, toy["train"][:24], toy["val"], seed=7)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert [e.train_loss for e in ha.epochs] == [e.train_loss for e in hb.epochs]
    lrs = ha.epochs[-1].lr
    assert lrs["rest"] == pytest.approx(1e-4) and lrs["ca_moe"] < 1e-4  # OneCycle warm-up vs constant


def test_checkpoint_round_trip_gives_identical_predictions(toy, tmp_path, monkeypatch):
    config = small_config("train.epochs=2")
    config.recipe = str(tmp_path / "recipes" / "mine.yaml")  # an absolute path, as --recipe NAME resolves it
    model, history = train(config, toy["train"][:28], toy["val"], seed=1)
    test = evaluate(model, toy["test"])
    monkeypatch.chdir(tmp_path)
    corpus = "/elsewhere/mix/manifest.jsonl"
    folder = save_trained(
        tmp_path / "m", model, history, config, encoders={"asr": "x@1"}, test_metrics=test, corpus=corpus
    )
    for name in (
        "model.pt",
        "model.yaml",
        "history.json",
        "training_curves.png",
        "metrics.json",
        "confusion_matrix.png",
    ):
        assert (folder / name).is_file(), name
    loaded, meta = load_model(folder)
    assert meta.seed == 1 and meta.encoders == {"asr": "x@1"} and meta.training["best_epoch"] == history.best_epoch
    # paths under the working directory are recorded relative to it (a committed model names no machine's paths)
    assert meta.training["recipe"] == "recipes/mine.yaml" and meta.training["corpus"] == corpus
    before, after = predict(model, toy["test"]), predict(loaded, toy["test"])
    np.testing.assert_array_equal(before.y_pred, after.y_pred)
    np.testing.assert_allclose(before.probs, after.probs, rtol=0, atol=1e-6)


# ---- evaluation ---------------------------------------------------------------------------------------


def test_metrics_on_known_predictions_match_sklearn_and_hand_values():
    from sklearn.metrics import f1_score, precision_score

    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    m = metrics_from_predictions(y_true, y_pred, ["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6) and m.recall == pytest.approx(4 / 6)
    assert m.f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # per class F1 0.5, 0.8, 2/3; equal supports
    assert m.f1 == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m.precision == pytest.approx(precision_score(y_true, y_pred, average="weighted"))
    assert m.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m.report["b"]["recall"] == 1.0 and m.report["c"]["support"] == 2
    by = breakdown(
        [argparse.Namespace(label=y, g=g) for y, g in zip(y_true, "xxyyxy", strict=True)], y_pred, "g", ["a", "b", "c"]
    )
    assert by["x"].accuracy == pytest.approx(2 / 3) and by["y"].n == 3


def test_by_corpus_reports_a_corpus_spoken_flat_apart_from_its_text():
    from training.evaluate import corpus_group

    assert corpus_group("meld-test-dia3_utt0") == "meld"
    assert corpus_group("meld-test-dia3_utt0-flat") == "meld spoken"  # the same line, spoken flat
    assert corpus_group("dailydialog-train-12_3-flat") == "dailydialog spoken"
    assert corpus_group("ravdess-03-01-05-01-01-01-05") == "ravdess"
    assert corpus_group("synthetic-en-00017") == "other"


def test_evaluate_equals_metrics_of_the_predictions(toy):
    model, _ = train(small_config("model.name=late_fusion", "train.epochs=1"), toy["train"][:14], toy["val"], seed=0)
    m = evaluate(model, toy["test"])
    p = predict(model, toy["test"])
    assert m.to_dict() == metrics_from_predictions(p.y_true, p.y_pred, EMOTIONS, p.loss).to_dict()
    # the late-fusion baseline's branches are its modalities; each is judged on its own argmax
    branches = p.branch_metrics(EMOTIONS)
    assert set(branches) == set(p.branch_probs) and len(branches) >= 2
    for name, metrics in branches.items():
        assert (
            metrics.to_dict() == metrics_from_predictions(p.y_true, p.branch_probs[name].argmax(1), EMOTIONS).to_dict()
        )
    assert m.loss == pytest.approx(
        torch.nn.functional.cross_entropy(torch.log(torch.tensor(p.probs)), torch.tensor(p.y_true)).item(), abs=1e-5
    )


def test_confidence_interval_over_seeds_on_known_numbers():
    rows = [{"accuracy": a, "precision": a, "recall": a, "f1": a - 0.1} for a in (0.80, 0.82, 0.84, 0.86, 0.88)]
    s = summarise_seeds(rows)
    sd = math.sqrt(0.001)  # deviations 0.04, 0.02, 0, 0.02, 0.04 over n - 1 = 4
    half = 2.7764451 * sd / math.sqrt(5)  # t quantile 0.975 with 4 degrees of freedom
    assert (s["accuracy"].mean, s["accuracy"].sd) == (pytest.approx(0.84), pytest.approx(sd))
    assert (s["accuracy"].ci_low, s["accuracy"].ci_high) == (pytest.approx(0.84 - half), pytest.approx(0.84 + half))
    assert s["f1"].mean == pytest.approx(0.74) and s["accuracy"].n == 5
    assert s["accuracy"].format() == "84.0 ± 3.2 [80.1, 87.9]"
    one = summarise_seeds(rows[:1])["accuracy"]
    assert (one.sd, one.ci_low, one.ci_high) == (0.0, 0.8, 0.8)


def test_confusion_matrix_png(tmp_path):
    path = confusion_matrix_png(tmp_path / "cm.png", [[3, 1], [0, 4]], ["anger", "fear"], title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- every recipe trains --------------------------------------------------------------------------------


def _recipe_configs() -> list[tuple[str, TrainConfig]]:
    plan = ComparisonRecipe.from_yaml(RECIPES_DIR / "comparison.yaml")
    configs = [(p.stem, TrainConfig.from_yaml(p)) for p in sorted(RECIPES_DIR.glob("*.yaml")) if p.stem != "comparison"]
    return configs + [(f"comparison:{r.slug}", plan.config_for(r)) for r in plan.rows]


@pytest.mark.parametrize(("name", "config"), _recipe_configs(), ids=[n for n, _ in _recipe_configs()])
def test_recipe_trains_and_writes_a_loadable_model(name, config, toy, tmp_path):
    config = config.with_overrides(["train.epochs=1", *QUIET])
    model, history = train(config, toy["train"][:14], toy["val"][:7], seed=0)
    folder = save_trained(tmp_path / "model", model, history, config)
    loaded, meta = load_model(folder)
    assert meta.registry_name == config.model.name and len(history.epochs) == 1
    np.testing.assert_allclose(predict(loaded, toy["test"][:7]).probs, predict(model, toy["test"][:7]).probs, atol=1e-6)


def test_comparison_report_and_findings(toy, tmp_path, monkeypatch):
    """run_comparison on hand-made features: results.json/md, PNGs, resume, findings."""
    import training.compare as compare

    splits = {"train": toy["train"][:14], "val": toy["val"][:7], "test": toy["test"][:14]}
    monkeypatch.setattr(compare, "prepare_features", lambda *a, **k: (splits, {"asr": "x@1"}))
    settings = load_settings(home=tmp_path)
    args = dict(
        manifest="corpus/manifest.jsonl",
        out_dir=tmp_path / "cmp",
        seeds=(0, 1),
        models=["cnn_speech", "proposed-top-1"],
        overrides=[*SMALL_MODEL, *QUIET, "train.epochs=1"],
        progress=False,
    )
    report = run_comparison(settings, **args)
    assert [r["slug"] for r in report["table"]] == ["cnn-speech", "proposed-top-1"]
    for name in (
        "results.json",
        "results.md",
        "comparison.png",
        "confusion_cnn-speech.png",
        "confusion_proposed-top-1.png",
    ):
        assert (tmp_path / "cmp" / name).is_file(), name
    row = report["table"][1]
    assert row["seeds"] == [0, 1] and set(row["breakdown"]) == {"language", "cue"}
    assert set(row["breakdown"]["cue"]) == {"voice", "text", "both"}
    f = report["findings"][0]
    assert f["proposed"] == "Proposed (top-1)" and [v["against"] for v in f["versus"]] == ["CNN (speech)"]
    assert report["complete"] and "| Proposed (top-1) | proposed |" in results_markdown(report)
    calls, original = [], compare._run_one
    monkeypatch.setattr(compare, "_run_one", lambda *a, **k: calls.append(a))
    again = run_comparison(settings, **args)  # every run is on disk: nothing is retrained
    assert calls == [] and again["table"][0]["test"] == report["table"][0]["test"]
    monkeypatch.setattr(compare, "_run_one", lambda *a, **k: calls.append(a) or original(*a, **k))
    run_comparison(
        settings,
        **{**args, "models": ["cnn_speech"], "seeds": (0,), "overrides": [*args["overrides"], "train.lr=1e-3"]},
    )
    assert len(calls) == 1  # a run trained with another configuration is never reused
    assert findings([]) == []


# ---- real features on the tiny bundle ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """The tiny RANDOM bundle, a 14-utterance English synthetic corpus (train, val and test calls) and
    settings rooted in a tmp home (the feature cache is shared by the tests below)."""
    import shutil

    from training.bundle import make_tiny_bundle
    from training.model_store import TINY_MODELS

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (it renders the synthetic corpus)")
    from training.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("training")
    make_tiny_bundle(root / "models")
    manifest = generate_corpus(root / "corpus", 2, ("en",), seed=0, workers=1, progress=False)
    settings = load_settings(home=root / "home", models={"dir": root / "models", **TINY_MODELS})
    return settings, manifest


class _Counter:
    """Counts the encoder calls of the bundle's front-ends."""

    def __init__(self, monkeypatch):
        from training.encoders.asr import Transcriber
        from training.encoders.speech import SpeechEncoder
        from training.encoders.text import TextEncoder

        self.calls = {"asr": 0, "text": 0, "speech": 0}
        for key, cls, method in (
            ("asr", Transcriber, "transcribe"),
            ("text", TextEncoder, "encode"),
            ("speech", SpeechEncoder, "encode"),
        ):
            original = getattr(cls, method)

            def counted(*a, _original=original, _key=key, **k):
                self.calls[_key] += 1
                return _original(*a, **k)

            monkeypatch.setattr(cls, method, counted)

    def total(self) -> int:
        return sum(self.calls.values())


def test_feature_cache_hit_text_sources_and_new_encoder_version(tiny_env, monkeypatch, tmp_path):
    from training.data import read_manifest

    settings, manifest = tiny_env
    cache = tmp_path / "features"  # a cache of its own: it counts every computation from empty, in any test order
    examples = read_manifest(manifest)[:6]
    counter = _Counter(monkeypatch)
    first = extract_features(settings, examples, cache, progress=False, threads=1)
    assert counter.calls["asr"] == 6 and counter.calls["speech"] >= 1
    assert [r.id for r in first] == [e.id for e in examples] and first[0].text_hidden.dtype == np.float16
    assert first[0].label == EMOTIONS.index(examples[0].label) and first[0].cue == examples[0].extra["cue"]
    # each record carries its speaker baseline in its call, as the speech encoder service computes it
    assert [(r.speaker, r.call_id) for r in first] == [(e.speaker, e.call_id) for e in examples]
    for i, r in enumerate(first):
        earlier = [p for p in first[:i] if (p.call_id, p.speaker) == (r.call_id, r.speaker)]
        assert r.speaker_count == len(earlier)
        if earlier:
            pooled = np.concatenate([p.speech_frames[p.speech_mask].astype(np.float64) for p in earlier])
            np.testing.assert_allclose(r.speaker_mean, pooled.mean(0), rtol=1e-4, atol=1e-5)
    assert any(r.speaker_count for r in first)
    spec = feature_spec(settings)
    assert len(list((cache / spec.key).glob("*.npz"))) == 6

    before = counter.total()
    again = extract_features(settings, examples, cache, progress=False)
    manifest_text = extract_features(settings, examples, cache, text_source="manifest", progress=False)
    assert counter.total() == before  # cache hits: no encoder ran, whichever text source
    np.testing.assert_array_equal(again[3].speech_frames, first[3].speech_frames)
    assert [r.transcript for r in manifest_text] == [e.text for e in examples]
    assert [r.transcript for r in again] == [r.asr_text for r in again]

    electra = settings.model_copy(
        update={"models": settings.models.model_copy(update={"text_encoder": "tiny-electra"})}
    )
    assert feature_spec(electra).key != spec.key
    for window_s in (15.0, 30.0):  # Whisper's encoder window changes the transcripts
        other = settings.model_copy(update={"models": settings.models.model_copy(update={"asr_window_s": window_s})})
        assert feature_spec(other).key != spec.key and feature_spec(other).encoders == spec.encoders
    extract_features(electra, examples[:2], cache, progress=False, threads=1)
    assert counter.calls["asr"] == 8  # a new encoder version never reuses stale features

    changed = [replace(examples[0], text="A different corpus text.")]
    extract_features(settings, changed, cache, progress=False, threads=1)
    assert counter.calls["asr"] == 9  # nor does a changed example

    # the corpus copied elsewhere (new paths, new mtimes: a fresh provisioning) keeps its features
    copies = tmp_path / "copy"
    copies.mkdir()
    moved = []
    for e in examples:
        target = copies / f"{e.id}{Path(e.audio_path).suffix}"
        target.write_bytes(Path(e.audio_path).read_bytes())
        os.utime(target, ns=(1, 10**18))
        moved.append(replace(e, audio_path=target))
    again_elsewhere = extract_features(settings, moved, cache, progress=False, threads=1)
    assert counter.calls["asr"] == 9
    np.testing.assert_array_equal(again_elsewhere[3].speech_frames, first[3].speech_frames)
    # ... and new bytes under the same name are heard again
    audio, sr = sf.read(moved[0].audio_path, dtype="float32")
    sf.write(moved[0].audio_path, audio * 0.5, sr)
    extract_features(settings, moved[:1], cache, progress=False, threads=1)
    assert counter.calls["asr"] == 10


def test_text_only_examples_get_the_text_branch_only_and_train_beside_spoken_ones(tiny_env, monkeypatch):
    """A text corpus line (no audio) costs the text encoder alone: no Whisper, no speech frames,
    no edges; it batches and trains with spoken utterances."""
    from training.data import Example, read_manifest
    from training.models import build_model, fusion_loss

    settings, manifest = tiny_env
    spoken = read_manifest(manifest)[:2]
    text_only = [
        Example("meld-1", None, "anger", text="You never listen to me!", split="train"),
        Example("meld-2", None, "happiness", text="That is wonderful news.", split="train"),
    ]
    counter = _Counter(monkeypatch)
    records = extract_features(
        settings, spoken + text_only, settings.home / "features-mixed", progress=False, threads=1
    )
    assert counter.calls["asr"] == 2  # the spoken ones only
    by_id = {r.id: r for r in records}
    for ex in text_only:
        r = by_id[ex.id]
        assert r.transcript == ex.text and r.asr_text == "" and r.words == [] and r.duration == 0.0
        assert r.text_mask.any() and not r.speech_mask.any()
        assert r.speech_frames.shape == by_id[spoken[0].id].speech_frames.shape and not r.speech_frames.any()
    batch = collate(records)
    assert batch.edge_counts.tolist()[2:] == [0, 0]  # (the tiny random ASR may give the spoken ones no words)
    fusion = TrainConfig.from_dict({}).fusion_config(
        d_text=batch.text.shape[2],
        d_speech=batch.speech.shape[2],
        max_tokens=batch.num_tokens,
        max_frames=batch.num_frames,
    )
    model = build_model("proposed", fusion)
    loss = fusion_loss(model(batch), batch.labels, fusion.aux_loss_weight, fusion.branch_loss_weight)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    # cached: a second run computes nothing, and the text-only files say what they are
    before = counter.total()
    extract_features(settings, spoken + text_only, settings.home / "features-mixed", progress=False)
    assert counter.total() == before


def test_train_and_eval_commands_on_the_tiny_bundle(tiny_env, tmp_path, capsys):
    from training import evaluate as evaluate_cli
    from training import train as train_cli

    settings, manifest = tiny_env
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    out = tmp_path / "model"
    args = parser.parse_args(
        [
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--seed",
            "3",
            "--no-progress",
            "train.epochs=2",
            "data.workers=1",
            "data.speech_layer=1",
            "model.speaker_norm=true",
            *SMALL_MODEL,
        ]
    )
    assert train_cli.main(args, settings) == 0
    meta = read_meta(out)
    assert meta.seed == 3 and set(meta.encoders) == {"asr", "text_encoder", "speech_encoder"}
    assert meta.encoders["text_encoder"].startswith("tiny-e5@")
    assert meta.encoders["speech_encoder"].endswith(
        "#layer1#level-26"
    )  # the recipe's layer and the level, recorded in the model
    assert settings.models.speech_layer is None
    capsys.readouterr()

    parser = argparse.ArgumentParser()

    evaluate_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--manifest",
            str(manifest),
            "--model",
            str(out),
            "--json",
            "--no-progress",
            "--split",
            "all",
            "--by",
            "language",
        ]
    )
    assert evaluate_cli.main(args, settings) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 1
    result = json.loads(stdout)
    # evaluated on the layer it was trained on, although the settings say the last one
    assert result["n"] == 14 and set(result) >= {"accuracy", "precision", "recall", "f1", "report", "confusion"}
    groups = result["by"]["groups"]  # the same predictions, per language
    assert result["by"]["key"] == "language" and len(groups) >= 1 and sum(g["n"] for g in groups.values()) == 14
    right = sum(round(g["accuracy"] * g["n"]) for g in groups.values())
    assert right == round(result["accuracy"] * 14)
    assert (out / "eval" / "corpus" / "confusion_matrix.png").is_file()
    # each branch of the fused model judged alone, beside the fusion
    assert set(result["branches"]) == {"ca_moe", "sp_moe"}
    assert all(b["n"] == 14 and 0 <= b["f1"] <= 1 for b in result["branches"].values())

    with pytest.raises(SystemExit, match="trained on text_encoder"):
        electra = settings.model_copy(
            update={"models": settings.models.model_copy(update={"text_encoder": "tiny-electra"})}
        )
        evaluate_cli.main(args, electra)


def test_compare_command_on_the_tiny_bundle(tiny_env, tmp_path, capsys):
    """``emotion compare --models ... --seeds 2`` as a user types it: two rows, two seeds each, on
    the same cached features; the Markdown table on stdout and the report files on disk."""
    from training import compare as compare_cli

    settings, manifest = tiny_env
    out = tmp_path / "comparison"
    parser = argparse.ArgumentParser()
    compare_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--seeds",
            "2",
            "--no-progress",
            "--models",
            "cnn_speech",
            "proposed-top-1",
            "train.epochs=1",
            "data.workers=1",
            *SMALL_MODEL,
        ]
    )
    assert compare_cli.main(args, settings) == 0
    table = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [r["slug"] for r in results["table"]] == ["cnn-speech", "proposed-top-1"]
    for row in results["table"]:
        assert row["seeds"] == [0, 1] and row["label"] in table
    assert (out / "comparison.png").is_file() and (out / "confusion_proposed-top-1.png").is_file()
    assert (out / "results.md").read_text().strip() in table
    assert compare_cli.main(parser.parse_args(["--manifest", str(manifest), "--models", "no-such-row"]), settings) == 2


def test_train_command_rejects_a_bad_override(tmp_path, caplog):
    from training import train as train_cli

    parser = argparse.ArgumentParser()

    train_cli.add_arguments(parser)

    args = parser.parse_args(["train.lrr=1"])
    assert train_cli.main(args, load_settings(home=tmp_path)) == 2
    assert "did you mean 'train.lr'" in caplog.text


def test_speaker_normalised_training_fits_the_prior_and_redraws_sessions(toy):
    from training.speakers import attach_baselines, speaker_prior

    train_records = [copy.copy(r) for r in toy["train"][:28]]
    for i, r in enumerate(train_records):
        r.speaker, r.call_id = f"spk{i % 4}", None  # four speakers, clips without calls (as RAVDESS)
    attach_baselines(train_records, window=8)
    before = [r.speaker_count for r in train_records]
    config = small_config("model.speaker_norm=true", "train.epochs=2", "train.min_epochs=1")
    model, history = train(config, train_records, toy["val"], seed=0, speaker_window=8)
    mean, var = speaker_prior(train_records)
    np.testing.assert_allclose(model.speaker_norm.prior_mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(model.speaker_norm.prior_var.numpy(), var, rtol=1e-6)
    assert [r.speaker_count for r in train_records] != before  # sessions drawn again for training
    assert len(history.epochs) == 2 and np.isfinite(history.epochs[-1].train_loss)


def test_training_with_the_voice_statistics_branch_standardises_it_on_the_training_speech(toy):
    from training.models.layers import masked_mean_std

    config = small_config("model.branches=[ca, sp, vs]", "train.epochs=1", "train.min_epochs=1")
    model, history = train(config, toy["train"], toy["val"], seed=0)
    # the linear read-out learns at its own rate, the rest of the model at the paper's
    lrs = history.epochs[-1].lr
    assert lrs["voice_stats"] == pytest.approx(1e-3) and lrs["rest"] == pytest.approx(1e-4) and "ca_moe" in lrs
    branch = model.branches["voice_stats"]
    spoken = [r for r in toy["train"] if r.speech_mask.any()]
    batch = collate(spoken)
    stats = masked_mean_std(batch.speech.float(), batch.speech_mask)
    np.testing.assert_allclose(branch.stats_mean.numpy(), stats.mean(0).numpy(), atol=1e-4)
    np.testing.assert_allclose(branch.stats_scale.numpy(), stats.std(0).clamp_min(1e-3).numpy(), rtol=1e-3)


def test_the_shipped_model_is_served_when_the_home_has_none_and_a_trained_one_is_left_alone(tmp_path, monkeypatch):
    from training import train as train_module
    from training.checkpoint import ModelMeta, model_version, save_model
    from training.models import FusionConfig, build_model
    from training.train import ensure_default_model

    shipped = tmp_path / "shipped" / "default"
    model = build_model("proposed", FusionConfig(d_text=16, d_speech=8, d_model=16, n_heads=2))
    save_model(shipped, model, ModelMeta("proposed", model.config.to_dict(), list(model.config.class_names)))
    (shipped / "MODEL_CARD.md").write_text("# card\n")
    monkeypatch.setattr(train_module, "SHIPPED_MODEL", shipped)
    settings = load_settings(home=tmp_path / "home")
    settings.default_model_dir.mkdir(parents=True)  # an interrupted copy: a folder without a model
    (settings.default_model_dir / "model.yaml").write_text("half")

    out = ensure_default_model(settings)
    assert out == settings.default_model_dir and model_version(out) == model_version(shipped)
    assert (out / "MODEL_CARD.md").read_text() == "# card\n"
    assert not list(out.parent.glob(".default-*")), "the staging folder was left behind"

    other = build_model("proposed", FusionConfig(d_text=16, d_speech=8, d_model=16, n_heads=2, dropout=0.2))
    save_model(out, other, ModelMeta("proposed", other.config.to_dict(), list(other.config.class_names)))
    trained = model_version(out)
    assert ensure_default_model(settings) == out and model_version(out) == trained != model_version(shipped)

    monkeypatch.setattr(train_module, "SHIPPED_MODEL", tmp_path / "none")
    with pytest.raises(ConfigError, match="emotion train --recipe default"):
        ensure_default_model(load_settings(home=tmp_path / "other"))


def test_the_repository_ships_a_default_model_with_its_card():
    from training.checkpoint import load_model
    from training.train import SHIPPED_MODEL

    model, meta = load_model(SHIPPED_MODEL)
    card = (SHIPPED_MODEL / "MODEL_CARD.md").read_text()
    for licence in ("CC BY-NC-SA 4.0", "GPL-3.0", "Apache-2.0", "non-commercial"):
        assert licence in card
    for version in meta.encoders.values():
        assert version in card, f"the card does not name the encoder {version}"
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert meta.config.get("speaker_norm") is True


def test_voice_copies_join_the_training_split_only(tmp_path, monkeypatch):
    import training.features as features
    from training.data.manifest import Example, write_manifest
    from training.train import prepare_features

    lines = [
        Example(f"ravdess-{s}-{i}", tmp_path / "a.wav", "anger", speaker=f"ravdess-{s}", split=split)
        for s, split in (("01", "train"), ("02", "val"), ("03", "test"))
        for i in range(2)
    ]
    (tmp_path / "a.wav").write_bytes(b"")  # the manifest reader checks that the file is there
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    seen: list[Example] = []

    def extract(settings, examples, *args, **kwargs):
        seen.extend(examples)
        return []

    monkeypatch.setattr(features, "extract_features", extract)
    monkeypatch.setattr(features, "feature_spec", lambda *a, **k: dataclasses.make_dataclass("S", ["encoders"])({}))
    config = TrainConfig.from_yaml("default", ["data.voice_copies=[-2.5]"])
    prepare_features(load_settings(home=tmp_path), manifest, config.data, progress=False)
    assert [e.id for e in seen] == [e.id for e in lines] + ["ravdess-01-0~-2.5st", "ravdess-01-1~-2.5st"]
    seen.clear()
    prepare_features(load_settings(home=tmp_path), manifest, TrainConfig.from_yaml("default").data, progress=False)
    assert [e.id for e in seen][len(lines) :] == [  # the default recipe's copies: 2.5 semitones down and up
        "ravdess-01-0~-2.5st",
        "ravdess-01-1~-2.5st",
        "ravdess-01-0~+2.5st",
        "ravdess-01-1~+2.5st",
    ]
    seen.clear()
    no_copies = TrainConfig.from_yaml("default", ["data.voice_copies=[]"]).data
    prepare_features(load_settings(home=tmp_path), manifest, no_copies, progress=False)
    assert [e.id for e in seen] == [e.id for e in lines]  # none when a recipe lists none
