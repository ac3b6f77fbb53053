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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from shared.alignment import (  # noqa: F401 (re-exported)
    WordSpan,
    time_aligned_adjacency,
    timed_word_spans,
    word_char_spans,
)

from .config import EdgeRule
from .layers import Projection, masked_mean

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
    ``0..F-1``) of one utterance's time-aligned graph, sorted by token then frame: the nonzero
    cells of :func:`shared.alignment.time_aligned_adjacency` (the rule is written there)."""
    adjacency = time_aligned_adjacency(token_offsets, token_mask, word_spans, frame_times, frame_mask, rule)
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

    def dense(self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, adjacency: Tensor) -> Tensor:
        """:meth:`forward` in eval mode on a dense graph: ``adjacency [B, T, F]`` bool (True: an edge
        between token ``i`` and frame ``j``, :func:`shared.alignment.time_aligned_adjacency`) in place
        of the edge list -> the same ``[B, d_graph]``.

        Each ``GATConv`` (concatenated heads, self loops, no edge features) is written as attention
        of each token over itself and its frames, and of each frame over itself and its tokens; the
        weights are the layers' own.  This form has no data-dependent sizes, so it exports to ONNX
        (the served ``graph_gat`` runs it on ONNX Runtime); padded positions take part only by
        attending to themselves and are left out of the pooling."""
        if self.training:
            raise RuntimeError("TimeAlignedGAT.dense is the eval-mode GAT (no attention dropout); call eval() first")
        if not self.convs:
            raise RuntimeError("this GAT was built without its layers (with_gat=False)")
        text_mask, speech_mask = text_mask.bool(), speech_mask.bool()
        adjacency = adjacency.bool() & text_mask.unsqueeze(-1) & speech_mask.unsqueeze(1)
        xt = self.text_proj(torch.where(text_mask.unsqueeze(-1), text, 0.0))
        xf = self.speech_proj(torch.where(speech_mask.unsqueeze(-1), speech, 0.0))
        for conv, norm in zip(self.convs, self.norms, strict=True):
            to_tokens, to_frames = _dense_gat_conv(conv, xt, xf, adjacency)
            xt, xf = norm(xt + nn.functional.elu(to_tokens)), norm(xf + nn.functional.elu(to_frames))
        return self.out(torch.cat([masked_mean(xt, text_mask), masked_mean(xf, speech_mask)], -1))

    @classmethod
    def from_config(cls, config: FusionConfig) -> TimeAlignedGAT:
        c = config
        return cls(c.d_text, c.d_speech, c.gat_hidden, c.d_graph, c.gat_heads, c.gat_layers, c.dropout)


def _dense_gat_conv(conv: nn.Module, xt: Tensor, xf: Tensor, adjacency: Tensor) -> tuple[Tensor, Tensor]:
    """One eval-mode ``GATConv`` on the bipartite token/frame graph with self loops: ``xt [B, T, D]``,
    ``xf [B, F, D]``, ``adjacency [B, T, F]`` -> the layer's output at the tokens and at the frames.
    Node ``i`` attends to ``j`` with ``softmax_j(leaky_relu(a_dst . W x_i + a_src . W x_j))``."""
    conv_: Any = conv
    heads, channels = conv_.heads, conv_.out_channels
    b, t, f = xt.shape[0], xt.shape[1], xf.shape[1]
    ht = conv_.lin(xt).view(b, t, heads, channels).transpose(1, 2)  # [B, H, T, C]
    hf = conv_.lin(xf).view(b, f, heads, channels).transpose(1, 2)  # [B, H, F, C]
    att_src, att_dst = conv_.att_src.view(1, heads, 1, channels), conv_.att_dst.view(1, heads, 1, channels)
    slope = conv_.negative_slope

    def attend(h_self: Tensor, h_other: Tensor, edges: Tensor) -> Tensor:
        src_self, dst_self = (h_self * att_src).sum(-1), (h_self * att_dst).sum(-1)  # [B, H, N]
        src_other = (h_other * att_src).sum(-1)  # [B, H, M]
        loop = nn.functional.leaky_relu(src_self + dst_self, slope).unsqueeze(-1)  # [B, H, N, 1]
        scores = nn.functional.leaky_relu(dst_self.unsqueeze(-1) + src_other.unsqueeze(-2), slope)  # [B, H, N, M]
        scores = torch.where(edges.unsqueeze(1), scores, torch.full((), float("-inf"), dtype=scores.dtype))
        weights = torch.softmax(torch.cat([loop, scores], -1), -1)  # the self loop keeps every row finite
        out = weights[..., :1] * h_self + torch.matmul(weights[..., 1:], h_other)  # [B, H, N, C]
        return out.transpose(1, 2).reshape(b, -1, heads * channels) + conv_.bias

    return attend(ht, hf, adjacency), attend(hf, ht, adjacency.transpose(1, 2))
