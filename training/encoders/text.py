"""Text encoder: token-level last hidden states ``[B, max_tokens, D]`` with character offsets.

The paper feeds the text branch the last hidden state of a pretrained text encoder over a fixed
128-token window.  Offsets (each token's character span in the *original* text) let the graph
builder align tokens with Whisper's word timestamps.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .common import DEFAULT_THREADS, pick_device, resolve_for, set_threads, settings_device

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

    from ..model_store.resolve import ResolvedModel

log = logging.getLogger("training.encoders")


@dataclass
class TextEmbedding:
    """Encoder output for a batch of texts (all numpy, on the CPU)."""

    hidden: np.ndarray
    """float32 ``[B, max_tokens, dim]``: last hidden state, zero on padding positions."""
    mask: np.ndarray
    """bool ``[B, max_tokens]``: True for every token fed to the model (specials and prompt prefix
    included), False for padding."""
    offsets: np.ndarray
    """int32 ``[B, max_tokens, 2]``: ``[start, end)`` character span of each token in the original
    text (surrounding whitespace excluded); ``(0, 0)`` for special, prefix and padding tokens."""

    def pooled(self, normalize: bool = True) -> np.ndarray:
        """Mean over the masked tokens, ``[B, dim]`` (L2-normalised by default): sentence vectors."""
        m = self.mask[..., None].astype(np.float32)
        v = (self.hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)
        if normalize:
            v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        return v.astype(np.float32)


def _has_pooler(model_dir: Path) -> bool:
    """Whether the checkpoint carries pooler weights (read from the safetensors headers only)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return True  # legacy .bin checkpoint: keep the architecture's default
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            if any(k.startswith("pooler.") or ".pooler." in k for k in f.keys()):
                return True
    return False


def map_offsets(text: str, spans: np.ndarray, prefix_len: int) -> np.ndarray:
    """Token spans over ``prefix + text`` -> spans over ``text``.

    Spans inside the prefix or covering only whitespace become ``(0, 0)``; others are trimmed of
    leading/trailing whitespace (SentencePiece attaches the preceding space to a word).
    """
    out = np.zeros_like(spans, dtype=np.int32)
    n = len(text)
    for i, (start, end) in enumerate(spans.tolist()):
        if end <= start:
            continue
        s, e = max(start - prefix_len, 0), min(end - prefix_len, n)
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            out[i] = (s, e)
    return out


class TextEncoder:
    """A transformers text encoder from the model bundle (E5, MiniLM, KoELECTRA, ...)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str,
        version: str,
        prefix: str = "",
        max_tokens: int = 128,
        device: str | None = "auto",
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 32,
    ) -> None:
        from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        set_threads(threads)
        self.name = name
        self.version = version
        self.prefix = prefix
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        if not (Path(model_dir) / "tokenizer.json").is_file():
            raise ValueError(f"{model_dir}: the text encoder needs a fast tokenizer (tokenizer.json) for offsets")
        # The generic fast tokenizer runs tokenizer.json exactly as written (model-specific classes
        # of transformers 5 may rebuild the pipeline, which changes offsets).
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
        if self.tokenizer.pad_token is None:
            raise ValueError(f"{model_dir}: the tokenizer defines no pad token")
        config = AutoConfig.from_pretrained(model_dir)
        kwargs: dict[str, Any] = {}
        mapped: Any = MODEL_MAPPING.get(type(config), None)
        model_cls = next((c for c in mapped if c is not None), None) if isinstance(mapped, tuple) else mapped
        if (
            model_cls is not None
            and "add_pooling_layer" in inspect.signature(model_cls).parameters
            and not _has_pooler(Path(model_dir))
        ):
            kwargs["add_pooling_layer"] = False  # no pooler weights: do not create a random one
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, **kwargs).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and self.max_tokens > limit:
            raise ValueError(f"max_tokens={self.max_tokens} exceeds {name}'s {limit} positions")

    # ---- construction from the bundle -----------------------------------------------------------

    @classmethod
    def from_resolved(
        cls,
        resolved: ResolvedModel,
        *,
        max_tokens: int = 128,
        device: str | None = "auto",
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 32,
    ) -> TextEncoder:
        return cls(
            resolved.path,
            name=resolved.name,
            version=resolved.version,
            prefix=str(resolved.options.get("prefix", "")),
            max_tokens=max_tokens,
            device=device,
            threads=threads,
            batch_size=batch_size,
        )

    @classmethod
    def from_bundle(
        cls,
        settings: Settings,
        name: str | None = None,
        device: str | None = None,
        threads: int | None = DEFAULT_THREADS,
        batch_size: int = 32,
    ) -> TextEncoder:
        """The configured (``settings.models.text_encoder``) or named text encoder of the bundle."""
        return cls.from_resolved(
            resolve_for(settings, name, "text_encoder"),
            max_tokens=settings.models.max_tokens,
            device=settings_device(settings, device),
            threads=threads,
            batch_size=batch_size,
        )

    # ---- inference -------------------------------------------------------------------------------

    def encode(self, texts: list[str]) -> TextEmbedding:
        """Encode ``texts``: exactly ``max_tokens`` positions each (truncated or padded)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts")
        b, t = len(texts), self.max_tokens
        hidden = np.zeros((b, t, self.dim), np.float32)
        mask = np.zeros((b, t), bool)
        offsets = np.zeros((b, t, 2), np.int32)
        for lo in range(0, b, self.batch_size):
            part = texts[lo : lo + self.batch_size]
            # Pad to the longest text of the batch only: padding is masked out of attention, so the
            # real tokens' states are the same as with padding to max_tokens, at a fraction of the cost.
            enc = self.tokenizer(
                [self.prefix + x for x in part],
                max_length=t,
                truncation=True,
                padding="longest",
                return_offsets_mapping=True,
                return_tensors="np",
            )
            spans = enc.pop("offset_mapping")
            inputs: Mapping[str, torch.Tensor] = {
                k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in enc.items()
            }
            with torch.inference_mode():
                out = self.model(**inputs).last_hidden_state.float().cpu().numpy()
            m = np.asarray(enc["attention_mask"]).astype(bool)
            n = m.shape[1]
            hidden[lo : lo + len(part), :n] = out * m[..., None]
            mask[lo : lo + len(part), :n] = m
            for i, text in enumerate(part):
                offsets[lo + i, :n] = map_offsets(text, spans[i], len(self.prefix)) * m[i, :, None]
        return TextEmbedding(hidden=hidden, mask=mask, offsets=offsets)

    def __repr__(self) -> str:
        return f"TextEncoder({self.version}, dim={self.dim}, max_tokens={self.max_tokens}, device={self.device})"
