"""Whisper's encoder on an unpadded window.

Whisper is trained on 30 s windows (3000 mel frames -> 1500 positions) and transformers'
``WhisperEncoder.forward`` refuses any other length.  The encoder itself works on shorter
windows when the positional table is cut to the window (the first ``N / 2`` rows for ``N`` mel
frames), which is what CTranslate2 does as well; the output then has 50 frames per second of
audio and none of the cost of 30 s of padding.  :class:`WindowedWhisperEncoder` is that forward
pass, usable for any even number of mel frames up to ``2 * max_source_positions``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


class WindowedWhisperEncoder(nn.Module):
    """Runs a transformers ``WhisperEncoder`` on ``[B, n_mels, N]`` features for any even ``N``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        # transformers 4.x layers also take a (required) layer_head_mask; 5.x layers do not.
        layers: Any = encoder.layers
        params = inspect.signature(layers[0].forward).parameters if len(layers) else {}
        self._layer_kwargs: dict[str, None] = {"attention_mask": None}
        if "layer_head_mask" in params:
            self._layer_kwargs["layer_head_mask"] = None

    @property
    def max_mel_frames(self) -> int:
        positions: Any = self.encoder.embed_positions
        return 2 * int(positions.num_embeddings)

    @property
    def num_blocks(self) -> int:
        return len(self.encoder.layers)

    def forward(self, input_features: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """``[B, n_mels, N]`` log-mel -> last hidden state ``[B, N // 2, d_model]``, or with ``layer``
        = ``k`` < :attr:`num_blocks` the output of block ``k`` (0: the front-end), computed by
        running only the first ``k`` blocks (that layer of :meth:`hidden_states`)."""
        return self._encode(input_features, keep_all=False, blocks=layer)[-1]

    def hidden_states(self, input_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, n_mels, N]`` log-mel -> every layer's output, ``1 + encoder_layers`` tensors
        ``[B, N // 2, d_model]``: the convolutional front-end (positions added), then each
        transformer block; the last one has the final layer norm applied, so it is :meth:`forward`'s
        output (the layout of transformers' ``output_hidden_states``)."""
        return self._encode(input_features, keep_all=True)

    def _encode(
        self, input_features: torch.Tensor, *, keep_all: bool, blocks: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        n = input_features.shape[-1]
        if n % 2 or n < 2 or n > self.max_mel_frames:
            raise ValueError(
                f"Whisper encoder window must be an even number of mel frames in [2, {self.max_mel_frames}], got {n}"
            )
        enc: Any = self.encoder  # a transformers WhisperEncoder
        x = nn.functional.gelu(enc.conv1(input_features))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        last = len(enc.layers)
        blocks = last if blocks is None else min(blocks, last)
        states = []
        for layer in enc.layers[:blocks]:
            if keep_all:
                states.append(x)
            out = layer(x, **self._layer_kwargs)
            x = out[0] if isinstance(out, tuple) else out
        # the final layer norm belongs to the last block's output only (a middle layer is raw)
        return (*states, enc.layer_norm(x) if blocks == last else x)
