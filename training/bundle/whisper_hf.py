"""Whisper's encoder rebuilt as a transformers ``WhisperEncoder`` from CTranslate2 weights.

faster-whisper models are CTranslate2 files; the speech encoder of the ``offline`` profile is the
same network as a PyTorch module (trainable, exportable).  CTranslate2 fuses the self-attention
projections into one ``[3D, D]`` matrix (q, k, v) whose k-bias is zero (Whisper's ``k_proj`` has
no bias).  The rebuilt encoder is checked against ``ctranslate2.models.Whisper.encode``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..encoders.audio import SAMPLE_RATE, synthetic_speech
from ..encoders.whisper_window import WindowedWhisperEncoder
from ..model_store.errors import BundleError
from ..model_store.manifest import CheckResult
from .ct2 import Ct2Model, read_ct2

if TYPE_CHECKING:  # pragma: no cover
    from transformers import WhisperConfig

log = logging.getLogger("training.bundle")

MAX_ABS_DIFF = 5e-3
"""Bound on |HF - CTranslate2| of the encoder output (float32 both; fp16 weights upcast)."""


def _t(model: Ct2Model, name: str) -> torch.Tensor:
    return torch.from_numpy(model.float32(name))


def _count_layers(model: Ct2Model, side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    layers = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise BundleError(f"{model.path}: cannot find the {side} layers of a Whisper model")
    return len(layers)


def whisper_config(model: Ct2Model, ct2_config: dict) -> WhisperConfig:
    """The transformers ``WhisperConfig`` matching a CTranslate2 Whisper model."""
    from transformers import WhisperConfig

    if model.spec_name != "WhisperSpec":
        raise BundleError(f"{model.path} holds a {model.spec_name}, not a WhisperSpec")
    d_model, n_mels, _ = model.get("encoder/conv1/weight").shape
    vocab = model.get("decoder/embeddings/weight").shape[0]
    ffn = model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]
    multilingual = vocab >= 51865
    eot = 50257 if multilingual else 50256
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=int(model.scalar("encoder/num_heads")),
        decoder_attention_heads=int(model.scalar("decoder/num_heads")),
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=model.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=model.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.get("decoder/position_encodings/encodings").shape[0],
        decoder_start_token_id=eot + 1,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        architectures=["WhisperEncoder"],
    )


def encoder_state_dict(model: Ct2Model, num_layers: int) -> dict[str, torch.Tensor]:
    """CTranslate2 encoder variables under transformers ``WhisperEncoder`` parameter names."""
    sd: dict[str, torch.Tensor] = {}

    def linear(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = _t(model, f"{ct}/weight")
        sd[f"{hf}.bias"] = _t(model, f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = _t(model, f"{ct}/gamma")
        sd[f"{hf}.bias"] = _t(model, f"{ct}/beta")

    linear("conv1", "encoder/conv1")
    linear("conv2", "encoder/conv2")
    sd["embed_positions.weight"] = _t(model, "encoder/position_encodings/encodings")
    norm("layer_norm", "encoder/layer_norm")
    for i in range(num_layers):
        hf, ct = f"layers.{i}", f"encoder/layer_{i}"
        w = _t(model, f"{ct}/self_attention/linear_0/weight")
        b = _t(model, f"{ct}/self_attention/linear_0/bias")
        d = w.shape[1]
        if w.shape[0] != 3 * d:
            raise BundleError(f"{model.path}: {ct} fused QKV has shape {tuple(w.shape)}, expected [3*{d}, {d}]")
        k_bias = float(b[d : 2 * d].abs().max())
        if k_bias != 0.0:
            raise BundleError(f"{model.path}: {ct} has a non-zero k bias ({k_bias}); not a Whisper encoder")
        (
            sd[f"{hf}.self_attn.q_proj.weight"],
            sd[f"{hf}.self_attn.k_proj.weight"],
            sd[f"{hf}.self_attn.v_proj.weight"],
        ) = (w[:d].clone(), w[d : 2 * d].clone(), w[2 * d :].clone())
        sd[f"{hf}.self_attn.q_proj.bias"], sd[f"{hf}.self_attn.v_proj.bias"] = b[:d].clone(), b[2 * d :].clone()
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    return sd


def convert_encoder(ct2_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write ``out_dir`` = ``WhisperEncoder`` (safetensors, float32) + ``WhisperFeatureExtractor``."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    with read_ct2(ct2_dir / "model.bin") as model:
        config = whisper_config(model, ct2_config)
        state = encoder_state_dict(model, config.encoder_layers)
    encoder = WhisperEncoder(config).eval()
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(f"rebuilding the Whisper encoder: missing weights {missing}, unexpected {unexpected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out_dir, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    return {
        "d_model": config.d_model,
        "encoder_layers": config.encoder_layers,
        "num_mel_bins": config.num_mel_bins,
        "max_source_positions": config.max_source_positions,
        "parameters": sum(p.numel() for p in encoder.parameters()),
    }


def load_encoder(hf_dir: Path) -> WindowedWhisperEncoder:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WindowedWhisperEncoder(WhisperEncoder.from_pretrained(hf_dir, dtype=torch.float32).eval())


def check_against_ct2(
    ct2_dir: Path, hf_dir: Path, *, threads: int = 2, full_window: bool = True, bound: float = MAX_ABS_DIFF
) -> list[CheckResult]:
    """Compare the rebuilt encoder with ``ctranslate2.models.Whisper.encode`` (float32).

    Inputs are deterministic synthetic speech: a 3 s *unpadded* window (how the speech encoder
    runs it: 300 mel frames -> 150 frames) and, when ``full_window``, 10 s padded to Whisper's
    30 s window (3000 -> 1500 frames), where the windowed forward must also equal transformers'
    own ``WhisperEncoder.forward``.
    """
    import ctranslate2
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(hf_dir)
    encoder = load_encoder(hf_dir)
    ct = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=threads)
    cases = [("unpadded_3s", synthetic_speech(3.0, seed=1), False)]
    if full_window:
        cases.append(("padded_30s", synthetic_speech(10.0, seed=2), True))
    results: list[CheckResult] = []
    with torch.inference_mode():
        for label, audio, pad in cases:
            kwargs: dict[str, Any] = {} if pad else {"padding": False, "truncation": False}
            feats = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np", **kwargs).input_features
            feats = np.ascontiguousarray(feats[..., : feats.shape[-1] // 2 * 2], dtype=np.float32)
            ours = encoder(torch.from_numpy(feats)).numpy()
            ref = np.asarray(ct.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
            if ref.shape != ours.shape:
                results.append(
                    CheckResult(f"ct2_encode_{label}", False, detail=f"shape {ours.shape} vs ct2 {ref.shape}")
                )
                continue
            diff = float(np.abs(ours - ref).max())
            results.append(
                CheckResult(
                    f"ct2_encode_{label}",
                    diff < bound,
                    diff,
                    bound,
                    f"max |HF - ctranslate2| over {ours.shape[1]} frames x {ours.shape[2]} "
                    f"(mean |x| {np.abs(ref).mean():.3f})",
                )
            )
            if pad:
                lib = encoder.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
                diff = float(np.abs(ours - lib).max())
                results.append(
                    CheckResult(
                        "windowed_vs_transformers_forward",
                        diff < 1e-4,
                        diff,
                        1e-4,
                        "windowed forward vs WhisperEncoder.forward on the 30 s window",
                    )
                )
    return results
