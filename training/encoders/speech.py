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

import dataclasses
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from math import ceil, floor, prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.prosody import LLD_NAMES, average_frames, extract_llds
from training.data.audio import normalise_level

from .audio import SAMPLE_RATE, to_mono_16k
from .common import DEFAULT_THREADS, pick_device, resolve_for, set_threads, settings_device
from .onnx import OnnxNetwork, export_network, network_dir
from .text import Runtime

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from shared.settings import Settings

    from ..model_store.resolve import ResolvedModel

FRAME_S = 0.02
"""One Whisper encoder output frame (conv2 has stride 2): 50 frames per second."""

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


def pool_or_pad(hidden: np.ndarray, times: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[N, D]`` frames + ``[N, 2]`` times -> exactly ``max_frames`` frames, mask and times.

    ``N <= max_frames``: zero padding.  ``N > max_frames``: adaptive average pooling; output frame
    ``j`` averages source frames ``floor(j N / F) .. ceil((j + 1) N / F) - 1`` (PyTorch's
    ``adaptive_avg_pool1d`` rule) and spans their time union.
    """
    hidden = np.asarray(hidden, np.float32)
    n, d = hidden.shape
    frames = np.zeros((max_frames, d), np.float32)
    mask = np.zeros(max_frames, bool)
    out_times = np.zeros((max_frames, 2), np.float32)
    if n == 0:
        return frames, mask, out_times
    if n <= max_frames:
        frames[:n] = hidden
        mask[:n] = True
        out_times[:n] = times
        return frames, mask, out_times
    sums = np.concatenate([np.zeros((1, d), np.float64), np.cumsum(hidden, axis=0, dtype=np.float64)])
    for j in range(max_frames):
        start, end = floor(j * n / max_frames), ceil((j + 1) * n / max_frames)
        frames[j] = (sums[end] - sums[start]) / (end - start)
        out_times[j] = (times[start, 0], times[end - 1, 1])
    mask[:] = True
    return frames, mask, out_times


def whisper_log_mel(audio: np.ndarray, mel_filters: np.ndarray, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """Whisper's log-mel spectrogram of 16 kHz ``audio`` without padding it to 30 s: float32
    ``[n_mels, len(audio) // hop]`` (the centred STFT with a periodic Hann window, its last frame
    dropped, power through ``mel_filters`` ``[n_fft // 2 + 1, n_mels]``, log10 floored 8 below the
    peak, then ``(x + 4) / 4``), as transformers' ``WhisperFeatureExtractor`` computes it."""
    audio = np.asarray(audio, np.float32)
    half = n_fft // 2
    padded = np.pad(audio, (half, half), mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    spectrum = np.fft.rfft(padded[index] * window, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2)[:-1].astype(np.float32)
    log = np.log10(np.maximum(np.asarray(mel_filters, np.float32).T @ power.T, 1e-10))
    return ((np.maximum(log, log.max() - 8.0) + 4.0) / 4.0).astype(np.float32)


@dataclass(frozen=True)
class SpeechFrontEnd:
    """What the numpy side of a speech encoder needs to know about its network: how audio becomes
    the network's input (``whisper``: log-mel; ``wav2vec2``: the normalised waveform), and the
    frames the network gives (width, layers, stride, receptive field)."""

    family: str
    """``whisper`` or ``wav2vec2`` (wav2vec2-style models: HuBERT, WavLM, ...)."""
    encoder_dim: int
    num_layers: int
    """Hidden states: the front-end's output, then one per transformer block."""
    stride_s: float
    receptive_s: float
    min_samples: int
    """The shortest audio that gives one frame."""
    max_chunk_s: float
    """The longest audio the network takes at once (Whisper: its positional table)."""
    hop: int = 160
    n_fft: int = 400
    do_normalize: bool = False
    mel_filters: np.ndarray | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def of_model(cls, model_dir: Path, chunk_seconds: float) -> SpeechFrontEnd:
        """The front end of the transformers model in ``model_dir``."""
        from transformers import AutoFeatureExtractor

        config = json.loads((Path(model_dir) / "config.json").read_text())
        extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        if getattr(extractor, "sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ValueError(f"{model_dir}: feature extractor expects {extractor.sampling_rate} Hz, not 16 kHz")
        if config["model_type"] == "whisper":
            hop = int(extractor.hop_length)
            return cls(
                family="whisper",
                encoder_dim=int(config["d_model"]),
                num_layers=int(config["encoder_layers"]) + 1,
                stride_s=FRAME_S,
                receptive_s=FRAME_S,
                min_samples=2 * hop,
                max_chunk_s=2 * int(config["max_source_positions"]) * hop / SAMPLE_RATE,
                hop=hop,
                n_fft=int(extractor.n_fft),
                mel_filters=np.asarray(extractor.mel_filters, np.float32),
            )
        kernels, strides = list(config["conv_kernel"]), list(config["conv_stride"])
        field = 1 + sum((k - 1) * prod(strides[:i]) for i, k in enumerate(kernels))
        return cls(
            family="wav2vec2",
            encoder_dim=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]) + 1,
            stride_s=prod(strides) / SAMPLE_RATE,
            receptive_s=field / SAMPLE_RATE,
            min_samples=field,
            max_chunk_s=chunk_seconds,
            do_normalize=bool(getattr(extractor, "do_normalize", False)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The front end as JSON values, its arrays as numpy (:func:`training.encoders.onnx.export_network`)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["mel_filters"] is None:
            del out["mel_filters"]
        return out

    @classmethod
    def of_dict(cls, values: dict[str, Any]) -> SpeechFrontEnd:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def features(self, piece: np.ndarray) -> np.ndarray:
        """One chunk of 16 kHz audio -> the network's input for it (Whisper: log-mel of an even
        number of frames; wav2vec2-style: the waveform, normalised when the model expects it)."""
        if self.family == "whisper":
            mel = whisper_log_mel(piece, self.mel_filters, self.n_fft, self.hop)  # type: ignore[arg-type]
            return mel[:, : mel.shape[-1] // 2 * 2]
        piece = np.asarray(piece, np.float32)
        if self.do_normalize:
            piece = (piece - piece.mean()) / np.sqrt(piece.var() + 1e-7)
        return piece.astype(np.float32)


class _TorchSpeechNetwork:
    """The transformers speech model read at ``layer``: the network's input in, hidden states out."""

    def __init__(self, model_dir: Path, front_end: SpeechFrontEnd, layer: int | None, device: str | None) -> None:
        import torch

        self.device = pick_device(device)
        self.is_whisper = front_end.family == "whisper"
        self.layer = layer
        if self.is_whisper:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            from .whisper_window import WindowedWhisperEncoder

            encoder = WhisperEncoder.from_pretrained(model_dir, dtype=torch.float32)
            self.model: torch.nn.Module = WindowedWhisperEncoder(encoder).to(self.device).eval()
        else:
            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(self.device).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` network input -> hidden state ``[B, N, D]`` at the layer read."""
        if self.is_whisper:
            return self.model(x, self.layer)
        if self.layer is not None:
            return self.model(input_values=x, output_hidden_states=True).hidden_states[self.layer]
        return self.model(input_values=x).last_hidden_state

    def module(self) -> torch.nn.Module:
        """The network as one module ``(inputs) -> hidden state``, to export."""
        import torch

        network = self

        class HiddenState(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = network.model

            def forward(self, inputs: torch.Tensor) -> torch.Tensor:
                return network.forward(inputs)

        return HiddenState().eval()

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.forward(torch.from_numpy(inputs["inputs"]).to(self.device)).float().cpu().numpy()

    def all_layers(self, batch: np.ndarray) -> np.ndarray:
        """Every hidden state ``[L, B, N, D]`` (the front-end's output first)."""
        import torch

        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode():
            if self.is_whisper:
                states = self.model.hidden_states(x)
            else:
                states = self.model(input_values=x, output_hidden_states=True).hidden_states
            return torch.stack(states).float().cpu().numpy()


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
    """A speech encoder from the model bundle (Whisper's encoder or a wav2vec2-style model), its
    network run by torch or, once exported, by ONNX Runtime (``runtime``)."""

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
        runtime: Runtime = "torch",
        models_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.max_frames = int(max_frames)
        self.batch_size = int(batch_size)
        self.bundle_version = version
        self.runtime: Runtime = runtime
        self.network: Any
        if runtime == "onnx":
            if models_dir is None:
                raise ValueError("runtime='onnx' needs the models_dir that holds the exported network")
            self.network = OnnxNetwork(network_dir(models_dir, version, reading.layer), threads)
            front_end = SpeechFrontEnd.of_dict(self.network.front_end)
            self.device = "cpu"
        else:
            set_threads(threads)
            front_end = SpeechFrontEnd.of_model(Path(model_dir), chunk_seconds)
        self.front_end = front_end
        self.is_whisper = front_end.family == "whisper"
        self.num_layers = front_end.num_layers
        self.stride_s, self.receptive_s = front_end.stride_s, front_end.receptive_s
        self.min_samples = front_end.min_samples
        self.chunk_samples = int(min(chunk_seconds, front_end.max_chunk_s) * SAMPLE_RATE)
        layer = reading.layer
        if layer is not None and not 0 <= layer < self.num_layers:
            raise ValueError(
                f"{name} has hidden states 0..{self.num_layers - 1} (0: the front-end, {self.num_layers - 1}: the last), "
                f"not layer {layer} (models.speech_layer)"
            )
        if runtime != "onnx":
            self.network = _TorchSpeechNetwork(Path(model_dir), front_end, layer, device)
            self.device = self.network.device
        self.reading = reading
        self.layer = layer
        """The hidden state read (None: the last)."""
        self.encoder_dim = front_end.encoder_dim
        """Width of the encoder's hidden states."""
        self.dim = reading.width(self.encoder_dim)
        """Width of the frames :meth:`encode` gives (the hidden state, then the prosodic descriptors)."""
        self.version = reading.version(version)

    def export_network(self, models_dir: Path) -> Path:
        """Write this encoder's network, read at its layer, for ONNX Runtime under ``models_dir``
        (once per version and layer; an existing export is kept).  Returns its folder."""
        import torch

        folder = network_dir(models_dir, self.bundle_version, self.layer)
        if folder.is_dir():
            return folder
        if not isinstance(self.network, _TorchSpeechNetwork):
            raise RuntimeError("only a torch encoder can export its network")
        example = torch.from_numpy(self.front_end.features(np.zeros(SAMPLE_RATE, np.float32))[None].repeat(2, 0))
        dynamic = {"inputs": {0: "batch", example.dim() - 1: "samples"}}
        front_end = {"version": self.bundle_version, "layer": self.layer, **self.front_end.as_dict()}
        return export_network(self.network.module().cpu(), {"inputs": example}, dynamic, folder, front_end)

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
        runtime: Runtime = "torch",
        models_dir: Path | None = None,
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
            runtime=runtime,
            models_dir=models_dir,
        )

    @classmethod
    def from_bundle(
        cls,
        settings: Settings,
        name: str | None = None,
        device: str | None = None,
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 16,
        runtime: Runtime = "torch",
    ) -> SpeechEncoder:
        """The configured (``settings.models.speech_encoder``) or named speech encoder of the bundle,
        read as the settings say (:meth:`SpeechReading.of_settings`), its network run by
        ``runtime`` (``onnx``: the network :meth:`export_network` wrote)."""
        return cls.from_resolved(
            resolve_for(settings, name, "speech_encoder"),
            max_frames=settings.models.max_frames,
            reading=SpeechReading.of_settings(settings),
            device=settings_device(settings, device),
            threads=threads,
            batch_size=batch_size,
            runtime=runtime,
            models_dir=settings.models_dir,
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
            feats = self.front_end.features(piece)
            chunks.append(_Chunk(item, start / SAMPLE_RATE, np.ascontiguousarray(feats, dtype=np.float32)))
        return chunks

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
        outputs: list[np.ndarray | None] = [None] * len(chunks)
        for members in groups.values():
            for lo in range(0, len(members), self.batch_size):
                part = members[lo : lo + self.batch_size]
                hidden = self.network({"inputs": np.stack([chunks[k].inputs for k in part])})
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
            hidden = np.concatenate([outputs[k] for k in ks])  # type: ignore[misc]
            starts = np.concatenate(
                [chunks[k].offset_s + np.arange(outputs[k].shape[0]) * self.stride_s for k in ks]  # type: ignore[union-attr]
            )
            t = np.stack([starts, starts + self.receptive_s], axis=1)
            t = np.minimum(t, durations[i])
            if self.reading.prosody:
                hidden = np.concatenate([hidden, prosody_frames(audios[i], len(hidden))], 1)
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
        if not isinstance(self.network, _TorchSpeechNetwork):
            raise RuntimeError("encode_layers needs the torch runtime (an exported network gives one layer)")
        hidden = [self.network.all_layers(c.inputs[None])[:, 0] for c in self._chunks(0, audio)]
        return np.concatenate(hidden, axis=1)

    def __repr__(self) -> str:
        return (
            f"SpeechEncoder({self.version}, dim={self.dim}, max_frames={self.max_frames}, device={self.device}, "
            f"runtime={self.runtime})"
        )
