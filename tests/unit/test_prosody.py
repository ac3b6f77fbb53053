"""shared.prosody and shared.speaker_norm on signals generated here (no audio files)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from shared.prosody import (
    FUNCTIONAL_NAMES,
    LLD_NAMES,
    ProsodyOptions,
    extract_functionals,
    extract_llds,
    average_frames,
    pool_frames,
)
from shared.speaker_norm import FeaturePrior, OnlineSpeakerNormaliser, normalise_per_speaker
from training.data.telephony import bandpass

SR = 16_000


def voice(
    f0: float,
    seconds: float = 1.0,
    *,
    period_jitter: float = 0.0,
    amplitude_jitter: float = 0.0,
    level: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """A vowel-like voice: harmonics up to 7 kHz with a -6 dB/octave tilt, its glottal periods
    drawn as ``T (1 + period_jitter N(0, 1))`` and its per-period amplitude as
    ``1 + amplitude_jitter N(0, 1)``; the phase advances by one cycle per period."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    n_periods = int(seconds * f0 * 1.5) + 2
    periods = SR / f0 * (1.0 + period_jitter * rng.standard_normal(n_periods))
    gains = 1.0 + amplitude_jitter * rng.standard_normal(n_periods)
    starts = np.concatenate([[0.0], np.cumsum(periods)])
    t = np.arange(n)
    k = np.searchsorted(starts, t, side="right") - 1
    phase = k + (t - starts[k]) / periods[k]
    harmonics = np.arange(1, int(7000 // f0) + 1)[:, None]
    x = np.sum(np.sin(2 * np.pi * harmonics * phase[None, :]) / harmonics, axis=0) * gains[k]
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def semitones(hz: float) -> float:
    return 12 * math.log2(hz / 27.5)


def median_f0_st(audio: np.ndarray) -> tuple[float, float]:
    """Median F0 (semitones) over the voiced frames and the voiced fraction."""
    frames = extract_llds(audio)
    return float(np.median(frames["f0_semitones"][frames.voiced])), float(frames.voiced.mean())


# ---- frame-level descriptors ---------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [70.0, 120.0, 220.0, 600.0])  # 600 Hz: strongly acted fear and surprise
def test_f0_of_a_harmonic_voice(f0: float):
    st, voiced = median_f0_st(voice(f0))
    assert voiced > 0.9
    assert st == pytest.approx(semitones(f0), abs=0.3)


@pytest.mark.parametrize("f0", [100.0, 120.0, 220.0])
def test_f0_survives_the_telephone_band(f0: float):
    """300-3400 Hz: the fundamental (and, at 100 Hz, the second harmonic) is gone."""
    phone = bandpass(voice(f0).astype(np.float64), SR).astype(np.float32)
    st, voiced = median_f0_st(phone)
    assert voiced > 0.8
    assert st == pytest.approx(semitones(f0), abs=1.0)


def test_f0_follows_a_glide_without_octave_jumps():
    """A 150 -> 250 Hz glide: the track rises monotonically (within 1 st of the truth everywhere)."""
    seconds = 1.0
    t = np.arange(int(seconds * SR)) / SR
    f0 = 150.0 + 100.0 * t / seconds
    phase = np.cumsum(f0) / SR
    x = sum(np.sin(2 * np.pi * h * phase) / h for h in range(1, 25))
    x = bandpass(0.3 * x / np.max(np.abs(x)), SR)
    frames = extract_llds(x.astype(np.float32))
    centres = np.arange(frames.n_frames) * frames.hop_s
    truth = np.array([semitones(150.0 + 100.0 * c / seconds) for c in centres])
    v = frames.voiced
    assert v.mean() > 0.8
    assert np.max(np.abs(frames["f0_semitones"][v] - truth[v])) < 1.0


def test_silence_is_unvoiced():
    frames = extract_llds(np.zeros(SR, dtype=np.float32))
    assert frames.n_frames == 1 + SR // 160
    assert not frames.voiced.any()
    assert not frames.active.any()
    assert np.all(frames["f0_semitones"] == 0)
    assert np.all(np.isfinite(frames.values))


def test_noise_is_unvoiced():
    noise = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    frames = extract_llds(noise)
    assert frames.active.mean() > 0.9
    assert frames.voiced.mean() < 0.1


def test_a_louder_copy_is_louder():
    quiet = voice(150.0, level=0.05)
    quiet_frames, loud_frames = extract_llds(quiet), extract_llds(quiet * 4)
    assert np.median(loud_frames["loudness"]) > 1.5 * np.median(quiet_frames["loudness"])
    assert np.median(loud_frames["rms_db"] - quiet_frames["rms_db"]) == pytest.approx(20 * math.log10(4), abs=0.1)
    # the level-free descriptors do not move
    for name in ("f0_semitones", "alpha_ratio_db", "spectral_slope_high", "jitter_local"):
        assert np.allclose(loud_frames[name], quiet_frames[name], atol=1e-3), name


def test_period_jitter_raises_jitter():
    steady = extract_llds(voice(130.0, 2.0))
    jittery = extract_llds(voice(130.0, 2.0, period_jitter=0.02))
    j_steady = np.mean(steady["jitter_local"][steady.voiced])
    j_jittery = np.mean(jittery["jitter_local"][jittery.voiced])
    assert j_steady < 0.002
    # E|T_i - T_(i-1)| / T = 2 sigma / sqrt(pi) for independent periods
    assert j_jittery == pytest.approx(0.02 * 2 / math.sqrt(math.pi), rel=0.35)


def test_amplitude_jitter_raises_shimmer_not_jitter():
    steady = extract_llds(voice(120.0, 2.0))
    shaky = extract_llds(voice(120.0, 2.0, amplitude_jitter=0.1))
    s_steady = np.mean(steady["shimmer_local"][steady.voiced])
    s_shaky = np.mean(shaky["shimmer_local"][shaky.voiced])
    assert s_steady < 0.005
    assert s_shaky == pytest.approx(0.1 * 2 / math.sqrt(math.pi), rel=0.3)
    assert np.mean(shaky["jitter_local"][shaky.voiced]) < 0.005


def test_noise_lowers_hnr():
    clean = voice(150.0)
    noisy = clean + 0.05 * np.random.default_rng(1).standard_normal(clean.size).astype(np.float32)
    hnr_clean = np.median(extract_llds(clean)["hnr_db"][extract_llds(clean).voiced])
    frames = extract_llds(noisy)
    hnr_noisy = np.median(frames["hnr_db"][frames.voiced])
    assert hnr_clean > 20
    assert hnr_noisy < hnr_clean - 5


def test_llds_have_their_names_and_are_finite():
    frames = extract_llds(voice(180.0, 0.5))
    assert frames.values.shape == (1 + 8000 // 160, len(LLD_NAMES))
    assert frames.values.dtype == np.float32
    assert np.all(np.isfinite(frames.values))
    assert len(set(LLD_NAMES)) == len(LLD_NAMES)


def test_options_are_checked():
    with pytest.raises(ValueError):
        ProsodyOptions(f0_min_hz=500.0, f0_max_hz=100.0)
    with pytest.raises(ValueError):
        ProsodyOptions(alpha_split_hz=5000.0)
    with pytest.raises(ValueError):
        extract_llds(np.array([0.0, np.nan]))


# ---- the paper's frame rule ----------------------------------------------------------------------------


def test_pool_frames_pads_short_inputs():
    lld = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    frames, mask = pool_frames(lld)
    assert frames.shape == (128, 3) and mask.shape == (128,)
    assert mask[:50].all() and not mask[50:].any()
    assert np.array_equal(frames[:50], lld) and not frames[50:].any()


@pytest.mark.parametrize("t", [128, 129, 300, 1000])
def test_pool_frames_matches_torch_adaptive_average_pooling(t: int):
    torch = pytest.importorskip("torch")
    lld = np.random.default_rng(t).standard_normal((t, 5)).astype(np.float32)
    frames, mask = pool_frames(lld)
    expected = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(lld).T[None], 128)[0].T.numpy()
    assert frames.shape == (128, 5) and mask.all()
    assert np.allclose(frames, expected, atol=1e-5)


@pytest.mark.parametrize(("t", "n"), [(301, 150), (7, 3), (3, 7), (5, 5)])
def test_average_frames_matches_torch_adaptive_average_pooling_down_and_up(t: int, n: int):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(t).standard_normal((t, 4)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x).T[None], n)[0].T.numpy()
    assert np.allclose(average_frames(x, n), expected, atol=1e-5)
    with pytest.raises(ValueError, match="average_frames"):
        average_frames(np.zeros((0, 4), np.float32), n)


def test_pool_frames_of_an_utterance():
    frames, mask = pool_frames(extract_llds(voice(150.0, 3.0)).values)
    assert frames.shape == (128, len(LLD_NAMES)) and mask.all()
    frames, mask = pool_frames(extract_llds(voice(150.0, 0.5)).values)
    assert mask.sum() == 51


# ---- functionals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audio",
    [np.zeros(SR, np.float32), np.zeros(0, np.float32), voice(200.0, 0.2), voice(90.0, 0.05)],
    ids=["silence", "empty", "0.2 s", "50 ms"],
)
def test_functionals_are_finite(audio: np.ndarray):
    values = extract_functionals(audio)
    assert values.shape == (len(FUNCTIONAL_NAMES),)
    assert np.all(np.isfinite(values))


def test_functional_names_are_unique():
    assert len(set(FUNCTIONAL_NAMES)) == len(FUNCTIONAL_NAMES)
    assert 55 <= len(FUNCTIONAL_NAMES) <= 90


def test_functionals_follow_the_voice():
    """Two syllables with a pause: F0 mean, rise, segments and pause as generated."""
    pause = np.zeros(int(0.3 * SR), np.float32)
    t = np.arange(int(0.4 * SR)) / SR
    rising = 150.0 * 2 ** (4 * t / 12 / 0.4)  # 150 Hz up 4 semitones in 0.4 s: 10 st/s
    x = sum(np.sin(2 * np.pi * h * np.cumsum(rising) / SR) / h for h in range(1, 30))
    syllable = (0.3 * x / np.max(np.abs(x))).astype(np.float32)
    audio = np.concatenate([pause, syllable, pause, syllable, pause])
    f = dict(zip(FUNCTIONAL_NAMES, extract_functionals(audio), strict=True))
    assert f["f0_mean"] == pytest.approx(semitones(150.0) + 2, abs=0.3)
    assert f["f0_rising_slope_mean"] == pytest.approx(10.0, rel=0.25)
    assert f["f0_falling_slope_mean"] < 2.0
    assert f["voiced_segments_per_s"] == pytest.approx(2 / 1.7, rel=0.05)
    assert f["voiced_segment_mean_s"] == pytest.approx(0.4, abs=0.04)
    assert f["pause_mean_s"] == pytest.approx(0.3, abs=0.04)
    assert f["voiced_fraction"] == pytest.approx(0.8 / 1.7, abs=0.05)  # 40 ms F0 windows blur the edges
    assert f["loudness_peaks_per_s"] == pytest.approx(2 / 1.7, rel=0.05)


def test_a_louder_copy_has_higher_loudness_functionals():
    quiet = extract_functionals(voice(150.0, level=0.05))
    loud = extract_functionals(voice(150.0, level=0.2))
    i = FUNCTIONAL_NAMES.index
    assert loud[i("loudness_mean")] > quiet[i("loudness_mean")]
    assert loud[i("equivalent_sound_level_db")] - quiet[i("equivalent_sound_level_db")] == pytest.approx(12.04, abs=0.1)
    assert loud[i("f0_mean")] == pytest.approx(quiet[i("f0_mean")], abs=1e-3)


# ---- speaker normalisation -----------------------------------------------------------------------------


def test_offline_per_speaker_normalisation():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 0.0], [14.0, 2.0]])
    z = normalise_per_speaker(x, ["a", "a", "b", "b"])
    assert np.allclose(z, [[-1, 0], [1, 0], [-1, -1], [1, 1]])


def test_prior_is_the_mean_and_the_within_speaker_variance():
    x = np.array([[0.0], [2.0], [100.0], [102.0]])
    prior = FeaturePrior.fit(x, ["a", "a", "b", "b"])
    assert prior.mean == pytest.approx([51.0])
    assert prior.var == pytest.approx([2.0])  # squared deviations (1 + 1 + 1 + 1) / (2 + 2 - 2) dof


def test_online_normalisation_starts_at_the_prior_and_never_sees_the_current_utterance():
    prior = FeaturePrior(np.array([0.0]), np.array([4.0]))
    norm = OnlineSpeakerNormaliser(prior, prior_weight=2.0)
    assert norm(np.array([10.0])) == pytest.approx([5.0])  # prior only: (10 - 0) / 2
    # one utterance seen (10): mean (1*10 + 2*0)/3, var (1*0 + 2*4)/3
    mean, var = 10 / 3, 8 / 3
    assert norm.normalise(np.array([10.0])) == pytest.approx([(10 - mean) / math.sqrt(var)])
    for _ in range(1000):
        norm.update(np.array([10.0 + np.random.default_rng(norm.n).standard_normal()]))
    assert norm.normalise(np.array([11.0])) == pytest.approx([1.0], abs=0.1)


# ---- the probe's speech-encoder features (benchmarks.prosody_probe) ---------------------------------------


def test_layer_statistics_are_each_layers_mean_and_sd_named_layer_major():
    from benchmarks.prosody_probe import encoder_feature_names, encoder_layer_columns, layer_statistics

    hidden = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)  # 3 layers, 4 frames, dim 2
    stats = layer_statistics(hidden)
    assert stats.shape == (3 * 2 * 2,) and stats.dtype == np.float32
    columns = encoder_layer_columns(encoder_feature_names(3, 2))
    assert [c.tolist() for c in columns] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for layer, cols in enumerate(columns):
        np.testing.assert_allclose(stats[cols], np.concatenate([hidden[layer].mean(0), hidden[layer].std(0)]))
    assert not layer_statistics(np.zeros((3, 0, 2), np.float32)).any()


def test_layer_weighted_probe_puts_its_weight_on_the_layer_that_carries_the_label():
    from benchmarks.prosody_probe import LayerWeightedProbe

    rng = np.random.default_rng(0)
    n, layers, dim = 300, 4, 8
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, layers, dim))
    x[:, 2] += 1.5 * rng.standard_normal((3, dim))[y]  # only layer 2 tells the classes apart
    x = 5.0 * x.reshape(n, -1) + 3.0
    probe = LayerWeightedProbe(layers, c=1.0, max_iter=30).fit(x[:200], y[:200])
    assert probe.layer_weights_.shape == (layers,) and probe.layer_weights_.sum() == pytest.approx(1.0)
    assert np.argmax(probe.layer_weights_) == 2 and probe.layer_weights_[2] > 0.9
    assert np.mean(probe.predict(x[200:]) == y[200:]) > 0.9


def test_windowed_whisper_hidden_states_are_transformers_layers_and_the_last_is_forward():
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from training.encoders.whisper_window import WindowedWhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=16,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        num_mel_bins=8,
        max_source_positions=8,
    )
    encoder = WhisperEncoder(config).eval()
    windowed = WindowedWhisperEncoder(encoder)
    mel = torch.randn(2, 8, 16)  # a full window: transformers' own forward accepts it
    with torch.inference_mode():
        ours = windowed.hidden_states(mel)
        theirs = encoder(mel, output_hidden_states=True).hidden_states
        assert len(ours) == len(theirs) == config.encoder_layers + 1
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(windowed(mel), ours[-1])
        short = windowed.hidden_states(mel[..., :6])  # a shorter window: 3 frames per layer
        assert [h.shape for h in short] == [torch.Size([2, 3, 16])] * 3
        torch.testing.assert_close(windowed(mel[..., :6]), short[-1])
        for layer in range(config.encoder_layers + 1):  # a middle layer runs only the blocks before it
            torch.testing.assert_close(windowed(mel, layer), theirs[layer])


# ---- the module's boundary -----------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["prosody.py", "speaker_norm.py"])
def test_shared_modules_import_only_numpy_and_shared(module: str):
    tree = ast.parse((Path(__file__).parents[2] / "shared" / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {"__future__", "collections", "dataclasses", "functools", "math", "numpy", "typing", "shared"}
