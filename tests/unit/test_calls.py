"""Synthetic calls: determinism, turn layout, channel separation and ground truth against the audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data.calls import GAP_S, CallSpec, generate_calls, read_call_spec

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

SEED = 5
N_CALLS = 4
TURNS = (4, 7)
FRAME_S = 0.02
NEGATIVE = {"anger", "disgust", "fear", "sadness"}


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list[CallSpec]:
    return generate_calls(
        tmp_path_factory.mktemp("calls"), N_CALLS, seed=SEED, utterances_per_call=TURNS, progress=False
    )


def frame_db(x: np.ndarray, sr: int) -> np.ndarray:
    """RMS level (dBFS) of consecutive 20 ms frames of a 1-D signal."""
    n = int(FRAME_S * sr)
    frames = x[: x.size // n * n].reshape(-1, n).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def read(call: CallSpec) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(str(call.path), dtype="float32", always_2d=True)
    return audio, sr


def test_files_and_specs(calls: list[CallSpec]):
    assert [c.call_id for c in calls] == [f"call-s{SEED}-{k:04d}" for k in range(1, N_CALLS + 1)]
    assert [c.language for c in calls] == ["en", "ko", "en", "ko"]
    for c in calls:
        info = sf.info(str(c.path))
        assert (info.samplerate, info.channels, info.subtype) == (8000, 2, "PCM_16")
        assert c.channel_roles == ("agent", "customer")
        assert info.frames / info.samplerate == pytest.approx(c.duration, abs=1e-3)
        assert TURNS[0] <= len(c.turns) <= TURNS[1]
        assert read_call_spec(c.truth_path) == c
        truth = json.loads(c.truth_path.read_text(encoding="utf-8"))
        assert [t["label"] for t in truth["turns"]] == [t.label for t in c.turns]
        assert all(t.text and t.language == c.language for t in c.turns)


def test_same_seed_same_bytes_other_seed_other_call(calls: list[CallSpec], tmp_path: Path):
    again = generate_calls(tmp_path / "a", 2, seed=SEED, utterances_per_call=TURNS, progress=False)
    for c, d in zip(calls, again):
        assert c.path.read_bytes() == d.path.read_bytes()
        assert c.truth_path.read_text() == d.truth_path.read_text()
    other = generate_calls(tmp_path / "b", 1, seed=SEED + 1, utterances_per_call=TURNS, progress=False)
    assert other[0].turns != calls[0].turns


def test_turns_alternate_with_gaps_and_never_overlap(calls: list[CallSpec]):
    for c in calls:
        assert [t.speaker for t in c.turns] == [("agent", "customer")[k % 2] for k in range(len(c.turns))]
        assert 0 < c.turns[0].start and c.turns[-1].end < c.duration
        for a, b in zip(c.turns, c.turns[1:]):
            assert a.start < a.end
            assert GAP_S[0] - 0.002 <= b.start - a.end <= GAP_S[1] + 0.002


def test_trajectories(calls: list[CallSpec]):
    for c in calls:
        customer = [t.label for t in c.turns if t.speaker == "customer"]
        agent = [t.label for t in c.turns if t.speaker == "agent"]
        assert set(agent) <= {"neutral", "happiness"}
        if c.trajectory == "calm":
            assert not NEGATIVE & set(customer)
        else:
            assert customer[0] == "neutral" and customer[-1] in {"anger", "disgust"}
    assert {c.trajectory for c in calls} == {"calm", "escalating"}


def test_ground_truth_matches_the_audio(calls: list[CallSpec]):
    """Speech energy is on the speaker's channel inside each turn; the other channel and the gaps
    carry only the low noise floor."""
    for c in calls:
        audio, sr = read(c)
        hop = int(FRAME_S * sr)
        levels = [frame_db(audio[:, ch], sr) for ch in range(2)]
        active = np.zeros((2, levels[0].size), dtype=bool)
        for t in c.turns:
            ch = c.channel_roles.index(t.speaker)
            a, b = int(t.start * sr) // hop, -(-int(t.end * sr) // hop)
            inside = levels[ch][a:b]
            assert inside.max() > -40, f"{c.call_id}: no speech in {t}"
            # speech starts and ends near the annotated bounds
            loud = np.flatnonzero(inside > inside.max() - 30)
            assert loud[0] * FRAME_S < 0.3 and (inside.size - 1 - loud[-1]) * FRAME_S < 0.3, t
            # the other channel is silent-ish during the turn
            assert levels[1 - ch][a:b].max() < -55, f"{c.call_id}: crosstalk during {t}"
            active[ch, max(0, a - 1) : b + 1] = True
        for ch in range(2):
            outside = levels[ch][~active[ch]]
            assert outside.size > 0 and outside.max() < -55, f"{c.call_id}: energy outside the turns on channel {ch}"
            assert np.median(outside) > -80  # a noise floor, not digital silence


def test_mono_mixes_both_channels(calls: list[CallSpec], tmp_path: Path):
    mono = generate_calls(tmp_path, 1, seed=SEED, utterances_per_call=TURNS, stereo=False, progress=False)[0]
    assert mono.channel_roles == ("mono",) and mono.turns == calls[0].turns
    stereo, sr = read(calls[0])
    mixed, sr_m = read(mono)
    assert sr == sr_m and mixed.shape == (stereo.shape[0], 1)
    assert np.max(np.abs(mixed[:, 0] - stereo.sum(axis=1))) <= 2.5 / 32768


def test_arguments_are_checked(tmp_path: Path):
    with pytest.raises(ValueError, match="languages"):
        generate_calls(tmp_path, 1, languages=("fr",))
    with pytest.raises(ValueError, match="utterances_per_call"):
        generate_calls(tmp_path, 1, utterances_per_call=(5, 3))
