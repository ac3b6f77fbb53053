"""Text encoder: token-level last hidden states ``[B, max_tokens, D]`` with character offsets.

The paper feeds the text branch the last hidden state of a pretrained text encoder over a fixed
128-token window.  Offsets (each token's character span in the *original* text) let the graph
builder align tokens with Whisper's word timestamps.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .common import DEFAULT_THREADS, pick_device, resolve_for, set_threads, settings_device
from .onnx import OnnxNetwork, export_network, network_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from tokenizers import Tokenizer

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


Runtime = Literal["torch", "onnx"]
"""How an encoder runs its network: torch (training, export, GPU serving) or ONNX Runtime (CPU
serving, :mod:`training.encoders.onnx`); the numpy around the network is the same in both."""


def load_tokenizer(model_dir: Path) -> tuple[Tokenizer, str, int]:
    """The fast tokenizer of ``model_dir`` (``tokenizer.json`` run exactly as written) with its pad
    token and id (``tokenizer_config.json``'s, else the one ``tokenizer.json`` pads with)."""
    from tokenizers import Tokenizer

    if not (model_dir / "tokenizer.json").is_file():
        raise ValueError(f"{model_dir}: the text encoder needs a fast tokenizer (tokenizer.json) for offsets")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    config_file = model_dir / "tokenizer_config.json"
    pad = json.loads(config_file.read_text()).get("pad_token") if config_file.is_file() else None
    if isinstance(pad, dict):
        pad = pad.get("content")
    if pad is None and tokenizer.padding:
        pad = tokenizer.padding.get("pad_token")
    pad_id = tokenizer.token_to_id(pad) if pad else None
    if pad_id is None:
        raise ValueError(f"{model_dir}: the tokenizer defines no pad token")
    return tokenizer, str(pad), int(pad_id)


class _TorchTextNetwork:
    """The transformers model: token ids and attention mask in, last hidden state out (numpy)."""

    def __init__(self, model_dir: Path, device: str | None) -> None:
        import torch
        from transformers import AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING
        from transformers import AutoConfig

        self.device = pick_device(device)
        config = AutoConfig.from_pretrained(model_dir)
        kwargs: dict[str, Any] = {}
        mapped: Any = MODEL_MAPPING.get(type(config), None)
        model_cls = next((c for c in mapped if c is not None), None) if isinstance(mapped, tuple) else mapped
        if (
            model_cls is not None
            and "add_pooling_layer" in inspect.signature(model_cls).parameters
            and not _has_pooler(model_dir)
        ):
            kwargs["add_pooling_layer"] = False  # no pooler weights: do not create a random one
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, **kwargs).to(self.device).eval()

    def module(self) -> torch.nn.Module:
        """The network as one module ``(input_ids, attention_mask) -> last hidden state``, to export."""
        import torch

        model = self.model

        class LastHiddenState(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return LastHiddenState().eval()

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()})
        return out.last_hidden_state.float().cpu().numpy()


class TextEncoder:
    """A transformers text encoder from the model bundle (E5, MiniLM, KoELECTRA, ...), run by torch
    or, once exported, by ONNX Runtime (``runtime``)."""

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
        runtime: Runtime = "torch",
        models_dir: Path | None = None,
    ) -> None:
        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.name = name
        self.version = version
        self.prefix = prefix
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.runtime: Runtime = runtime
        self.tokenizer, self.pad_token, self.pad_id = load_tokenizer(model_dir)
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        # Pad to the longest text of a batch only: padding is masked out of attention, so the real
        # tokens' states are the same as with padding to max_tokens, at a fraction of the cost.
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token)
        config = json.loads((model_dir / "config.json").read_text())
        self.network: Any
        if runtime == "onnx":
            if models_dir is None:
                raise ValueError("runtime='onnx' needs the models_dir that holds the exported network")
            self.device = "cpu"
            self.network = OnnxNetwork(network_dir(models_dir, version), threads)
        else:
            set_threads(threads)
            self.network = _TorchTextNetwork(model_dir, device)
            self.device = self.network.device
        self.dim = int(config["hidden_size"])
        limit = config.get("max_position_embeddings")
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
        runtime: Runtime = "torch",
        models_dir: Path | None = None,
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
        batch_size: int = 32,
        runtime: Runtime = "torch",
    ) -> TextEncoder:
        """The configured (``settings.models.text_encoder``) or named text encoder of the bundle,
        its network run by ``runtime`` (``onnx``: the network :meth:`export_network` wrote)."""
        return cls.from_resolved(
            resolve_for(settings, name, "text_encoder"),
            max_tokens=settings.models.max_tokens,
            device=settings_device(settings, device),
            threads=threads,
            batch_size=batch_size,
            runtime=runtime,
            models_dir=settings.models_dir,
        )

    def export_network(self, models_dir: Path) -> Path:
        """Write this encoder's network for ONNX Runtime under ``models_dir`` (once per version;
        an existing export is kept).  Returns its folder."""
        import torch

        folder = network_dir(models_dir, self.version)
        if folder.is_dir():
            return folder
        if not isinstance(self.network, _TorchTextNetwork):
            raise RuntimeError("only a torch encoder can export its network")
        ids = torch.full((2, 8), self.pad_id, dtype=torch.long)
        example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
        front_end = {"version": self.version, "dim": self.dim}
        return export_network(self.network.module().cpu(), example, dynamic, folder, front_end)

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
            encoded = self.tokenizer.encode_batch([self.prefix + x for x in part])
            ids = np.array([e.ids for e in encoded], np.int64)
            m = np.array([e.attention_mask for e in encoded], bool)
            out = self.network({"input_ids": ids, "attention_mask": m.astype(np.int64)})
            n = m.shape[1]
            hidden[lo : lo + len(part), :n] = out * m[..., None]
            mask[lo : lo + len(part), :n] = m
            for i, text in enumerate(part):
                spans = np.array(encoded[i].offsets, np.int32).reshape(-1, 2)
                offsets[lo + i, :n] = map_offsets(text, spans, len(self.prefix)) * m[i, :, None]
        return TextEmbedding(hidden=hidden, mask=mask, offsets=offsets)

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.version}, dim={self.dim}, max_tokens={self.max_tokens}, device={self.device}, "
            f"runtime={self.runtime})"
        )
