"""Speech encoder: frame-level last hidden states ``[B, max_frames, D]`` with frame times.

Paper rule: the encoder's last hidden state is zero-padded to ``max_frames`` (128) when shorter
and adaptive-average-pooled down to ``max_frames`` when longer.

Two families are supported:

* Whisper's encoder (``offline`` profile, ``hf-whisper-encoder``): log-mel on the *unpadded* audio
  (an even number of 10 ms mel frames), encoder run with the positional table cut to the window
  (:class:`~training.encoders.whisper_window.WindowedWhisperEncoder`); 50 frames/s, 512-d for base.
* wav2vec2-style encoders (``paper`` profile HuBERT, ``hf-speech``): raw 16 kHz waveform through
  ``AutoFeatureExtractor`` and ``AutoModel``; 50 frames/s (stride 320 samples, 400-sample receptive
  field), 768-d for base.

Audio longer than ``chunk_seconds`` (30 s, Whisper's window) is encoded in consecutive chunks
whose frames are concatenated before pooling.

A :class:`SpeechReading` says how the speech branch reads the encoder: ``layer``
(``models.speech_layer``) picks the hidden state, the last by default (the paper) or the output of
transformer block ``k`` (Whisper then runs only the first ``k`` blocks); ``level_dbfs``
(``models.speech_level_dbfs``) brings each utterance to one active speech level first, so a quiet
line sounds like a loud one. The reading is written into the encoder's version, so caches and
trained models keep readings apart.

:meth:`SpeechEncoder.encode_layers` gives every layer's frames of one utterance instead (front-end
output, then each transformer block; ``num_layers`` of them), unpooled, for layer-wise probes.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from math import ceil, floor, prod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from shared.prosody import LLD_NAMES, average_frames, extract_llds
from training.data.audio import normalise_level

from .audio import SAMPLE_RATE, to_mono_16k
from .common import DEFAULT_THREADS, pick_device, resolve_for, set_threads, settings_device
from .whisper_window import FRAME_S, WindowedWhisperEncoder

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

    from ..model_store.resolve import ResolvedModel

log = logging.getLogger("training.encoders")


@dataclass
class SpeechEmbedding:
    """Encoder output for a batch of utterances (all numpy, on the CPU)."""

    frames: np.ndarray
    """float32 ``[B, max_frames, dim]``; zero on padding frames."""
    mask: np.ndarray
    """bool ``[B, max_frames]``: True for frames carrying audio."""
    frame_times: np.ndarray
    """float32 ``[B, max_frames, 2]``: start/end seconds of each frame in the utterance; a pooled
    frame covers the union of its source frames; ``(0, 0)`` on padding frames."""
    durations: np.ndarray
    """float32 ``[B]``: utterance durations in seconds (after resampling to 16 kHz)."""


def pool_or_pad(hidden: torch.Tensor, times: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[N, D]`` frames + ``[N, 2]`` times -> exactly ``max_frames`` frames, mask and times.

    ``N <= max_frames``: zero padding.  ``N > max_frames``: adaptive average pooling; output frame
    ``j`` averages source frames ``floor(j N / F) .. ceil((j + 1) N / F) - 1`` (PyTorch's rule) and
    spans their time union.
    """
    n, d = hidden.shape
    frames = np.zeros((max_frames, d), np.float32)
    mask = np.zeros(max_frames, bool)
    out_times = np.zeros((max_frames, 2), np.float32)
    if n == 0:
        return frames, mask, out_times
    if n <= max_frames:
        frames[:n] = hidden.float().cpu().numpy()
        mask[:n] = True
        out_times[:n] = times
        return frames, mask, out_times
    pooled = torch.nn.functional.adaptive_avg_pool1d(hidden.float().T.unsqueeze(0), max_frames)[0].T
    frames[:] = pooled.cpu().numpy()
    mask[:] = True
    for j in range(max_frames):
        start, end = floor(j * n / max_frames), ceil((j + 1) * n / max_frames)
        out_times[j] = (times[start, 0], times[end - 1, 1])
    return frames, mask, out_times


def prosody_frames(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """The prosodic descriptors (:func:`shared.prosody.extract_llds`, 10 ms hop) of 16 kHz ``audio``
    averaged onto ``n_frames`` encoder frames spanning the same audio: float32
    ``[n_frames, len(LLD_NAMES)]``, to sit beside the encoder's hidden states."""
    return average_frames(extract_llds(audio).values, n_frames)


@dataclass
class _Chunk:
    item: int
    offset_s: float
    inputs: np.ndarray
    """Whisper: log-mel ``[n_mels, N]``; wav2vec2-style: model input values ``[samples]``."""


@dataclass(frozen=True)
class SpeechReading:
    """How the speech branch reads the speech encoder: the hidden state (``layer``, None: the last;
    ``models.speech_layer``) of the utterance brought to ``level_dbfs`` (None: as it arrives;
    ``models.speech_level_dbfs``), with the prosodic descriptors of :mod:`shared.prosody` beside
    each frame (``prosody``; ``models.speech_prosody``). Each changes the frames, so each is written
    into the encoder's version (``name@digest#layer3#level-26#prosody``), and caches, trained models
    and the served encoder keep readings apart; a model's recorded version gives back the reading
    it was trained on."""

    layer: int | None = None
    level_dbfs: float | None = None
    prosody: bool = False

    @classmethod
    def of_settings(cls, settings: Settings) -> SpeechReading:
        m = settings.models
        return cls(m.speech_layer, m.speech_level_dbfs, m.speech_prosody)

    @classmethod
    def of_version(cls, version: str) -> SpeechReading:
        """The reading a :meth:`version` string names (a plain bundle version: the last layer, no
        level, no prosody)."""
        layer = re.search(r"#layer(\d+)", version)
        level = re.search(r"#level(-?\d+(?:\.\d+)?)", version)
        return cls(
            int(layer.group(1)) if layer else None,
            float(level.group(1)) if level else None,
            "#prosody" in version,
        )

    def version(self, bundle_version: str) -> str:
        """``bundle_version`` (``name@digest``) with this reading named after it."""
        out = bundle_version
        if self.layer is not None:
            out += f"#layer{self.layer}"
        if self.level_dbfs is not None:
            out += f"#level{self.level_dbfs:g}"
        if self.prosody:
            out += "#prosody"
        return out

    def width(self, encoder_dim: int) -> int:
        """Width of a frame read this way from an encoder of ``encoder_dim``."""
        return encoder_dim + (len(LLD_NAMES) if self.prosody else 0)

    def applied(self, settings: Settings) -> Settings:
        """``settings`` reading the encoder this way (a copy; ``settings`` itself when it already does)."""
        if SpeechReading.of_settings(settings) == self:
            return settings
        models = settings.models.model_copy(
            update={"speech_layer": self.layer, "speech_level_dbfs": self.level_dbfs, "speech_prosody": self.prosody}
        )
        return settings.model_copy(update={"models": models})


class SpeechEncoder:
    """A speech encoder from the model bundle (Whisper's encoder or a wav2vec2-style model)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str,
        version: str,
        max_frames: int = 128,
        device: str | None = "auto",
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 16,
        chunk_seconds: float = 30.0,
        reading: SpeechReading = SpeechReading(),
    ) -> None:
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        set_threads(threads)
        self.name = name
        self.max_frames = int(max_frames)
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        config = AutoConfig.from_pretrained(model_dir)
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        if getattr(self.feature_extractor, "sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ValueError(
                f"{model_dir}: feature extractor expects {self.feature_extractor.sampling_rate} Hz, not 16 kHz"
            )
        self.is_whisper = config.model_type == "whisper"
        if self.is_whisper:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            encoder = WhisperEncoder.from_pretrained(model_dir, dtype=torch.float32)
            self.model: torch.nn.Module = WindowedWhisperEncoder(encoder).to(self.device).eval()
            self.dim = int(config.d_model)
            self.num_layers = int(config.encoder_layers) + 1
            self.hop = int(self.feature_extractor.hop_length)
            max_chunk = self.model.max_mel_frames * self.hop / SAMPLE_RATE
            self.stride_s, self.receptive_s = FRAME_S, FRAME_S
            self.min_samples = 2 * self.hop
        else:
            self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(self.device).eval()
            self.dim = int(config.hidden_size)
            self.num_layers = int(config.num_hidden_layers) + 1
            kernels, strides = list(config.conv_kernel), list(config.conv_stride)
            stride = prod(strides)
            field = 1 + sum((k - 1) * prod(strides[:i]) for i, k in enumerate(kernels))
            self.stride_s, self.receptive_s = stride / SAMPLE_RATE, field / SAMPLE_RATE
            self.min_samples = field
            max_chunk = chunk_seconds
        self.chunk_samples = int(min(chunk_seconds, max_chunk) * SAMPLE_RATE)
        layer = reading.layer
        if layer is not None and not 0 <= layer < self.num_layers:
            raise ValueError(
                f"{name} has hidden states 0..{self.num_layers - 1} (0: the front-end, {self.num_layers - 1}: the last), "
                f"not layer {layer} (models.speech_layer)"
            )
        self.reading = reading
        self.layer = layer
        """The hidden state read (None: the last)."""
        self.encoder_dim = self.dim
        """Width of the encoder's hidden states."""
        self.dim = reading.width(self.encoder_dim)
        """Width of the frames :meth:`encode` gives (the hidden state, then the prosodic descriptors)."""
        self.version = reading.version(version)

    # ---- construction from the bundle -----------------------------------------------------------

    @classmethod
    def from_resolved(
        cls,
        resolved: ResolvedModel,
        *,
        max_frames: int = 128,
        device: str | None = "auto",
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 16,
        reading: SpeechReading = SpeechReading(),
    ) -> SpeechEncoder:
        return cls(
            resolved.path,
            name=resolved.name,
            version=resolved.version,
            max_frames=max_frames,
            device=device,
            threads=threads,
            batch_size=batch_size,
            reading=reading,
        )

    @classmethod
    def from_bundle(
        cls,
        settings: Settings,
        name: str | None = None,
        device: str | None = None,
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 16,
    ) -> SpeechEncoder:
        """The configured (``settings.models.speech_encoder``) or named speech encoder of the bundle,
        read as the settings say (:meth:`SpeechReading.of_settings`)."""
        return cls.from_resolved(
            resolve_for(settings, name, "speech_encoder"),
            max_frames=settings.models.max_frames,
            reading=SpeechReading.of_settings(settings),
            device=settings_device(settings, device),
            threads=threads,
            batch_size=batch_size,
        )

    # ---- inference -------------------------------------------------------------------------------

    @property
    def frames_per_second(self) -> float:
        return 1.0 / self.stride_s

    def _heard(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """``waveform`` as the encoder hears it: mono 16 kHz, at the reading's level."""
        audio = to_mono_16k(waveform, sample_rate)
        if self.reading.level_dbfs is None or not audio.size:
            return audio
        return normalise_level(audio, SAMPLE_RATE, self.reading.level_dbfs)

    def _chunks(self, item: int, audio: np.ndarray) -> list[_Chunk]:
        chunks = []
        for start in range(0, len(audio), self.chunk_samples):
            piece = audio[start : start + self.chunk_samples]
            if len(piece) < self.min_samples:  # too short for one frame: pad with silence
                if start > 0:
                    break  # less than one frame left after a full chunk: dropped
                piece = np.pad(piece, (0, self.min_samples - len(piece)))
            fe = self.feature_extractor
            if self.is_whisper:
                feats = fe(
                    piece, sampling_rate=SAMPLE_RATE, padding=False, truncation=False, return_tensors="np"
                ).input_features[0]
                feats = feats[:, : feats.shape[-1] // 2 * 2]
            else:
                feats = fe(piece, sampling_rate=SAMPLE_RATE, return_tensors="np").input_values[0]
            chunks.append(_Chunk(item, start / SAMPLE_RATE, np.ascontiguousarray(feats, dtype=np.float32)))
        return chunks

    def _run(self, batch: np.ndarray, *, all_layers: bool = False) -> torch.Tensor:
        """The last hidden state ``[B, N, D]``, or with ``all_layers`` every layer's ``[L, B, N, D]``."""
        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode():
            if self.is_whisper:
                return torch.stack(self.model.hidden_states(x)) if all_layers else self.model(x, self.layer)
            if all_layers or self.layer is not None:
                states = self.model(input_values=x, output_hidden_states=True).hidden_states
                return torch.stack(states) if all_layers else states[self.layer]
            return self.model(input_values=x).last_hidden_state

    def encode(self, waveforms: list[np.ndarray], sample_rate: int = SAMPLE_RATE) -> SpeechEmbedding:
        """Encode utterances (any sample rate; resampled to 16 kHz) to ``max_frames`` frames each."""
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise TypeError("encode() takes a list of waveforms")
        audios = [self._heard(w, sample_rate) for w in waveforms]
        durations = np.array([len(a) / SAMPLE_RATE for a in audios], np.float32)
        chunks = [c for i, a in enumerate(audios) if len(a) for c in self._chunks(i, a)]
        # Equal-length chunks share a forward pass (no padding: Whisper has no attention mask).
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for k, c in enumerate(chunks):
            groups[c.inputs.shape].append(k)
        outputs: list[torch.Tensor | None] = [None] * len(chunks)
        for members in groups.values():
            for lo in range(0, len(members), self.batch_size):
                part = members[lo : lo + self.batch_size]
                hidden = self._run(np.stack([chunks[k].inputs for k in part]))
                for k, h in zip(part, hidden):
                    outputs[k] = h
        b, f = len(audios), self.max_frames
        frames = np.zeros((b, f, self.dim), np.float32)
        mask = np.zeros((b, f), bool)
        times = np.zeros((b, f, 2), np.float32)
        per_item: dict[int, list[int]] = defaultdict(list)
        for k, c in enumerate(chunks):
            per_item[c.item].append(k)
        for i, ks in per_item.items():
            hidden = torch.cat([outputs[k] for k in ks])  # type: ignore[misc]
            starts = np.concatenate(
                [chunks[k].offset_s + np.arange(outputs[k].shape[0]) * self.stride_s for k in ks]  # type: ignore[union-attr]
            )
            t = np.stack([starts, starts + self.receptive_s], axis=1)
            t = np.minimum(t, durations[i])
            if self.reading.prosody:
                hidden = torch.cat([hidden.float().cpu(), torch.from_numpy(prosody_frames(audios[i], len(hidden)))], 1)
            frames[i], mask[i], times[i] = pool_or_pad(hidden, t, f)
        return SpeechEmbedding(frames=frames, mask=mask, frame_times=times, durations=durations)

    def encode_layers(self, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Every layer's frames of one utterance, neither pooled nor padded: float32
        ``[num_layers, frames, dim]`` (chunks concatenated as in :meth:`encode`). Layer 0 is the
        front-end's output (Whisper: the convolutions plus positions; wav2vec2-style: the projected
        CNN features), layer ``l`` the ``l``-th transformer block's and the last is the final hidden
        state (final layer norm included; what :meth:`encode` reads unless ``layer`` picks another) -- for layer-wise probes such as SUPERB's weighted sum."""
        audio = self._heard(waveform, sample_rate)
        if not len(audio):
            return np.zeros((self.num_layers, 0, self.encoder_dim), np.float32)
        hidden = [self._run(c.inputs[None], all_layers=True)[:, 0] for c in self._chunks(0, audio)]
        return torch.cat(hidden, dim=1).float().cpu().numpy()

    def __repr__(self) -> str:
        return f"SpeechEncoder({self.version}, dim={self.dim}, max_frames={self.max_frames}, device={self.device})"
