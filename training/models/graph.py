"""The time-aligned token/frame graph of an utterance and the GAT that embeds it.

Alignment (the paper's graph embedding): Whisper gives each recognised word a time span; each text
token is mapped, through its character span, to the word(s) it overlaps in the transcript; an edge
joins token ``i`` and speech frame ``j`` when frame ``j`` falls inside one of those words' time
spans.  :class:`TimeAlignedGAT` runs a 2-layer GAT over the text and speech nodes and pools them
to one graph embedding per utterance.

Batched node layout (used by :func:`batch_edges`, ``FusionBatch.edge_index`` and the GAT): with
``T`` token and ``F`` frame positions per utterance, utterance ``b`` owns the nodes
``b*(T+F) .. b*(T+F)+T+F-1``; token ``i`` is node ``b*(T+F) + i`` and frame ``j`` is node
``b*(T+F) + T + j``.  Edges are stored once, as ``(token node, frame node)`` columns; the GAT
adds the reverse direction and self loops itself.

torch-geometric (about 0.2 GB in a process) is imported when a GAT's layers are built: the
``moe_fusion`` server, which receives the graph embedding, loads its model without them
(:func:`training.checkpoint.load_model` with ``with_gat=False``) and never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from shared.alignment import WordSpan, timed_word_spans, word_char_spans  # noqa: F401 (re-exported)

from .config import EdgeRule
from .layers import Projection

if TYPE_CHECKING:  # pragma: no cover
    from .config import FusionConfig

# ---- the time-aligned edges ------------------------------------------------------------------------


def time_aligned_edges(
    token_offsets: np.ndarray,
    token_mask: np.ndarray,
    word_spans: Sequence[WordSpan] | np.ndarray,
    frame_times: np.ndarray,
    frame_mask: np.ndarray,
    rule: EdgeRule = "center",
) -> np.ndarray:
    """Edges ``[2, E]`` (int64, rows: token index ``i`` in ``0..T-1``, frame index ``j`` in
    ``0..F-1``) of one utterance's time-aligned graph, sorted by token then frame.

    * Token ``i`` (valid: ``token_mask[i]`` and a non-empty ``[start, end)`` offset; special and
      padding tokens have ``(0, 0)``) belongs to every word whose character span overlaps its own
      (a sub-word token to its word; a token spanning two words to both).
    * Frame ``j`` (valid: ``frame_mask[j]``) belongs to a word when, with ``rule="center"``, the
      frame's centre ``(start + end) / 2`` lies in the word's closed interval ``[t_start, t_end]``;
      with ``rule="overlap"``, when the open intervals overlap at all.
    * Edge ``(i, j)`` when token ``i`` and frame ``j`` share a word.  No words, no valid tokens or
      no valid frames gives ``[2, 0]``; frames outside every word get no edge.
    """
    offsets = np.asarray(token_offsets, np.int64).reshape(-1, 2)
    t_valid = np.asarray(token_mask, bool).reshape(-1) & (offsets[:, 1] > offsets[:, 0])
    times = np.asarray(frame_times, np.float64).reshape(-1, 2)
    f_valid = np.asarray(frame_mask, bool).reshape(-1)
    spans = np.asarray(word_spans, np.float64).reshape(-1, 4)
    empty = np.zeros((2, 0), np.int64)
    if not len(spans) or not t_valid.any() or not f_valid.any():
        return empty
    c_start, c_end, w_start, w_end = spans.T
    w_valid = (c_end > c_start) & (w_end >= w_start)
    token_word = (
        t_valid[:, None] & w_valid[None, :] & (offsets[:, :1] < c_end[None, :]) & (c_start[None, :] < offsets[:, 1:])
    )  # [T, W]
    if rule == "center":
        centre = times.mean(1, keepdims=True)
        frame_word = (w_start[None, :] <= centre) & (centre <= w_end[None, :])
    elif rule == "overlap":
        frame_word = (times[:, :1] < w_end[None, :]) & (w_start[None, :] < times[:, 1:])
    else:
        raise ValueError(f"unknown edge rule {rule!r}")
    frame_word &= f_valid[:, None]  # [F, W]
    adjacency = token_word.astype(np.float32) @ frame_word.T.astype(np.float32) > 0  # [T, F]
    return np.stack(np.nonzero(adjacency)).astype(np.int64)


def batch_edges(edges: Sequence[np.ndarray], num_tokens: int, num_frames: int) -> np.ndarray:
    """Per-utterance ``(token, frame)`` edges -> one ``[2, E]`` edge set in the batched node layout
    (see the module docstring)."""
    stride = num_tokens + num_frames
    parts = [
        np.asarray(e, np.int64).reshape(2, -1) + np.array([[b * stride], [b * stride + num_tokens]])
        for b, e in enumerate(edges)
    ]
    return np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), np.int64)


# ---- the GAT -----------------------------------------------------------------------------------------


class TimeAlignedGAT(nn.Module):
    """Graph embedding of each utterance's time-aligned token/frame graph.

    Text tokens and speech frames are projected to ``d_hidden`` (separate projections, so node types
    stay distinguishable), connected token<->frame in both directions plus self loops, passed
    through ``layers`` ``GATConv`` layers (``heads`` concatenated heads, residual + LayerNorm, ELU),
    and pooled: masked mean over the text nodes and over the speech nodes, concatenated and
    projected to ``d_graph``.

    Only valid (unmasked) nodes enter the graph: padding is dropped before the projection and edges
    touching padding are discarded, so the embedding never depends on padded values.  An utterance
    without edges still gets a finite embedding (self loops only); one without any valid node gets
    the output layer's bias.
    """

    def __init__(
        self,
        d_text: int,
        d_speech: int,
        d_hidden: int = 128,
        d_graph: int = 128,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if d_hidden % heads:
            raise ValueError(f"d_hidden={d_hidden} must be divisible by heads={heads}")
        self.d_hidden, self.d_graph = d_hidden, d_graph
        self.text_proj = Projection(d_text, d_hidden, dropout)
        self.speech_proj = Projection(d_speech, d_hidden, dropout)
        if layers:
            from torch_geometric.nn import GATConv

        self.convs = nn.ModuleList(
            GATConv(d_hidden, d_hidden // heads, heads=heads, concat=True, dropout=dropout, add_self_loops=True)
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * d_hidden, d_graph)

    def forward(
        self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, edge_index: Tensor
    ) -> Tensor:
        """``text [B, T, Dt]``, ``text_mask [B, T]`` bool, ``speech [B, F, Ds]``, ``speech_mask [B, F]``
        bool, ``edge_index [2, E]`` long ``(token node, frame node)`` in the batched layout
        -> graph embedding ``[B, d_graph]``."""
        if not self.convs:
            raise RuntimeError(
                "this GAT was built without its layers (a model loaded with_gat=False, to serve the fusion): "
                "give the batch its graph embedding"
            )
        b, t = text_mask.shape
        f = speech_mask.shape[1]
        text_mask, speech_mask = text_mask.bool(), speech_mask.bool()
        layout = torch.cat([text_mask, speech_mask], 1)  # [B, T+F], the batched node layout
        valid = layout.reshape(-1)
        compact = valid.long().cumsum(0) - 1  # layout node -> index among the valid nodes
        n_nodes = int(valid.sum())

        x = text.new_zeros(n_nodes, self.d_hidden)
        node_ids = compact.view(b, t + f)
        x = x.index_put((node_ids[:, :t][text_mask],), self.text_proj(text[text_mask]))
        x = x.index_put((node_ids[:, t:][speech_mask],), self.speech_proj(speech[speech_mask]))

        src, dst = edge_index[0].long(), edge_index[1].long()
        keep = valid[src] & valid[dst]
        src, dst = compact[src[keep]], compact[dst[keep]]
        edges = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])

        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = norm(x + self.dropout(nn.functional.elu(conv(x, edges))))

        # mean over each utterance's text nodes (group 2b) and speech nodes (group 2b+1)
        is_speech = (torch.arange(t + f, device=x.device) >= t).long()
        group = (torch.arange(b, device=x.device).unsqueeze(1) * 2 + is_speech).reshape(-1)[valid]
        sums = x.new_zeros(2 * b, self.d_hidden).index_add_(0, group, x)
        counts = torch.bincount(group, minlength=2 * b).clamp_min(1).unsqueeze(1).to(x.dtype)
        return self.out((sums / counts).view(b, 2 * self.d_hidden))

    @classmethod
    def from_config(cls, config: FusionConfig) -> TimeAlignedGAT:
        c = config
        return cls(c.d_text, c.d_speech, c.gat_hidden, c.d_graph, c.gat_heads, c.gat_layers, c.dropout)
