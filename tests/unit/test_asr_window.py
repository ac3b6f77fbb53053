"""Whisper's encoder window cut to the audio heard (training.encoders.asr.encoder_window)."""

from __future__ import annotations

import numpy as np
import pytest

from training.encoders.asr import encoder_window


def padded_log_mel(heard: list[int], mels: int = 80, total: int = 3000, seed: int = 0) -> np.ndarray:
    """Rows of a log-mel as faster-whisper hands them to the encoder: ``heard[i]`` frames of
    speech-like values, then zeros up to 30 s."""
    rng = np.random.default_rng(seed)
    features = np.zeros((len(heard), mels, total), np.float32)
    for row, n in zip(features, heard, strict=True):
        row[:, :n] = rng.uniform(-0.8, 1.2, (mels, n))
    return features


def test_the_full_window_is_left_as_faster_whisper_made_it() -> None:
    features = padded_log_mel([350])
    assert encoder_window(features, 30.0) is features


@pytest.mark.parametrize(
    "heard,window_s,frames",
    [
        (350, 10.0, 1000),  # 3.5 s: the shortest window
        (899, 10.0, 1000),  # a second of margin still fits in 10 s
        (901, 10.0, 1500),  # ... and no longer: the next 5 s
        (1450, 10.0, 2000),
        (2950, 10.0, 3000),  # never more than Whisper's own window
        (350, 15.0, 1500),
        (3000, 10.0, 3000),
    ],
)
def test_the_window_is_the_audio_heard_and_a_second_in_steps_of_5_s(heard: int, window_s: float, frames: int) -> None:
    features = padded_log_mel([heard])
    window = encoder_window(features, window_s)
    assert window.shape == (1, 80, frames) and window.dtype == np.float32 and window.flags.c_contiguous
    np.testing.assert_array_equal(window[..., :heard], features[..., :heard])


def test_the_padding_is_the_log_mel_of_silence_per_row() -> None:
    """Whisper's log-mel floors every value 2.0 (8 decades, scaled) below the clip's peak; zero
    audio sits at that floor. Each row of a batch is padded with its own floor; a row that heard
    nothing stays as it was."""
    features = padded_log_mel([350, 720, 0])
    features[1, :, :720] += 0.5
    window = encoder_window(features, 10.0)
    assert window.shape == (3, 80, 1000)
    for row, given, n in zip(window, features, [350, 720], strict=False):
        np.testing.assert_allclose(row[:, n:], given[:, :n].max() - 2.0)
    np.testing.assert_array_equal(window[2], 0.0)
    np.testing.assert_array_equal(features[0, :, 350:], 0.0)  # the caller's array is not touched


def test_a_two_dimensional_log_mel_keeps_its_shape() -> None:
    features = padded_log_mel([420])[0]
    assert encoder_window(features, 10.0).shape == (80, 1000)
