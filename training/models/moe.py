"""The two mixture-of-experts fusion branches of the paper.

* **CA-MoE** (:class:`CAMoE`): cross-attention transformer experts, aimed at the "complex"
  emotions (fear, sadness).
* **SP-MoE** (:class:`SPMoE`): sum-product linear experts over ``[t, s, t+s, t*s, g]``, aimed at
  the "clear" ones (anger, happiness).

Both route whole utterances (not tokens) with a :class:`TopKGate` over ``n_experts`` experts
(top-1: Switch-style, top-2: GShard-style), run each utterance through its ``k`` experts only,
combine the experts' vectors with the gate weights and classify.  Shared work (projecting the
encoder states, pooling, the graph embedding) happens once per branch, outside the experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .layers import MLPHead, PooledProjection, Projection, clean_padding, masked_mean

# ---- gating --------------------------------------------------------------------------------------------


@dataclass
class GateOutput:
    combine: Tensor
    """``[B, E]`` expert weights, zero outside each utterance's top-k."""
    indices: Tensor
    """``[B, k]`` the chosen experts, most probable first."""
    probs: Tensor
    """``[B, E]`` softmax of the gate logits (noise included while training)."""
    aux_loss: Tensor
    """Scalar load-balancing loss (see :func:`load_balancing_loss`)."""


def load_balancing_loss(probs: Tensor, indices: Tensor) -> Tensor:
    """Switch/GShard auxiliary loss ``E * sum_e f_e * P_e``.

    ``f_e``: fraction of the batch's routing slots (``B * k``) sent to expert ``e``;
    ``P_e``: mean gate probability of expert ``e``.  Equals 1 for perfectly uniform routing and
    ``E`` when every utterance goes to the same expert with certainty; only ``P`` carries gradient.
    """
    n_experts = probs.shape[-1]
    dispatch = nn.functional.one_hot(indices, n_experts).to(probs.dtype).sum(1)  # [B, E]
    fraction = dispatch.mean(0) / indices.shape[-1]
    return n_experts * (fraction * probs.mean(0)).sum()


class TopKGate(nn.Module):
    """Linear gate over ``n_experts`` with top-``k`` routing.

    Combine weights: top-1 keeps the raw probability of the chosen expert (Switch Transformer: the
    gate then still receives gradient through the expert output); top-k>1 renormalises the k
    probabilities to sum to 1 (GShard).  ``noise_std > 0`` adds Gaussian noise to the logits in
    training mode only (noisy top-k gating), which helps exploration of the experts.
    """

    def __init__(self, d_in: int, n_experts: int = 5, k: int = 1, noise_std: float = 0.0) -> None:
        super().__init__()
        if not 1 <= k <= n_experts:
            raise ValueError(f"k={k} must lie in 1..{n_experts}")
        self.n_experts, self.k, self.noise_std = n_experts, k, noise_std
        self.proj = nn.Linear(d_in, n_experts)

    def forward(self, x: Tensor) -> GateOutput:
        logits = self.proj(x)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        probs = torch.softmax(logits, -1)
        top_p, top_i = probs.topk(self.k, dim=-1)
        weights = top_p if self.k == 1 else top_p / top_p.sum(-1, keepdim=True)
        combine = torch.zeros_like(probs).scatter(-1, top_i, weights)
        return GateOutput(combine=combine, indices=top_i, probs=probs, aux_loss=load_balancing_loss(probs, top_i))


def dispatch_experts(experts: nn.ModuleList, gate: GateOutput, d_out: int, *inputs: Tensor) -> Tensor:
    """``sum_e combine[:, e] * expert_e(inputs)``, running each expert only on the utterances routed
    to it (rows of every tensor in ``inputs``) -> ``[B, d_out]``."""
    batch = inputs[0].shape[0]
    out = inputs[0].new_zeros(batch, d_out)
    for e, expert in enumerate(experts):
        rows = (gate.indices == e).any(-1).nonzero().squeeze(-1)
        if not torch.compiler.is_exporting() and rows.numel() == 0:
            continue  # (an exported graph runs the expert on no rows instead: no branch on data)
        y = expert(*(x.index_select(0, rows) for x in inputs))
        out = out.index_add(0, rows, y * gate.combine[rows, e].unsqueeze(-1))
    return out


@dataclass
class BranchOutput:
    logits: Tensor
    """``[B, C]``."""
    gate: GateOutput

    @property
    def aux_loss(self) -> Tensor:
        return self.gate.aux_loss


# ---- CA-MoE -------------------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    """Multi-head attention of ``queries [b, L, d]`` over ``memory [b, S, d]`` (keys = values),
    memory positions with ``memory_mask`` False excluded.

    The maths of ``nn.MultiheadAttention(d, n_heads, dropout, batch_first=True)`` with
    ``key_padding_mask=~memory_mask``, written out on ``scaled_dot_product_attention`` with a
    boolean mask: measured 1.1-1.4x faster on CPU at these sizes (no float-mask conversion, fewer
    copies).  Every query row needs at least one valid memory position (else NaN).
    """

    def __init__(self, d_model: int, n_heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, queries: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        b, n_q, d = queries.shape
        n_m, h = memory.shape[1], self.n_heads
        q = self.query(queries).view(b, n_q, h, d // h).transpose(1, 2)
        k, v = self.key_value(memory).view(b, n_m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=memory_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, n_q, d))


class CrossAttentionExpert(nn.Module):
    """One cross-attention transformer block (post-norm), pooled to an utterance vector.

    Text tokens attend to speech frames and speech frames attend to text tokens (two
    :class:`CrossAttention`, padding excluded by the masks), then a shared position-wise FFN;
    each sub-layer has dropout, a residual and LayerNorm.

    Graph conditioning: the graph embedding ``g`` is prepended as an extra key/value token (the
    *graph token*) to both attended sequences, so every token and frame can draw on the
    time-aligned graph; it also guarantees at least one valid key, so a missing modality never
    produces NaNs.  Output: ``Linear([mean_t; mean_s])`` over the valid positions, ``[b, d_model]``.
    """

    def __init__(self, d_model: int, n_heads: int = 4, ffn_mult: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.text_to_speech = CrossAttention(d_model, n_heads, dropout)
        self.speech_to_text = CrossAttention(d_model, n_heads, dropout)
        self.norm_text, self.norm_speech, self.norm_ffn = (nn.LayerNorm(d_model) for _ in range(3))
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * d_model, d_model),
        )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * d_model, d_model)

    def forward(self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, graph: Tensor) -> Tensor:
        """``text [b, T, d]``, ``text_mask [b, T]``, ``speech [b, F, d]``, ``speech_mask [b, F]``,
        ``graph [b, d]`` (all projected to ``d_model``) -> ``[b, d_model]``."""
        g = graph.unsqueeze(1)
        always = torch.ones_like(text_mask[:, :1])
        t = self.text_to_speech(text, torch.cat([g, speech], 1), torch.cat([always, speech_mask], 1))
        s = self.speech_to_text(speech, torch.cat([g, text], 1), torch.cat([always, text_mask], 1))
        h = torch.cat([self.norm_text(text + self.dropout(t)), self.norm_speech(speech + self.dropout(s))], 1)
        h = self.norm_ffn(h + self.dropout(self.ffn(h)))
        n_tokens = text.shape[1]
        pooled = torch.cat([masked_mean(h[:, :n_tokens], text_mask), masked_mean(h[:, n_tokens:], speech_mask)], -1)
        return self.out(pooled)


class CAMoE(nn.Module):
    """Cross-Attention Transformer MoE branch -> logits ``[B, n_classes]`` + load-balancing loss.

    Shared (once per batch): the text / speech / graph projections to ``d_model`` and the gate
    input ``[mean_t; mean_s; g]``.  Each utterance then runs through its top-``k`` of
    ``n_experts`` :class:`CrossAttentionExpert` blocks; the weighted sum is classified by a
    LayerNorm + linear head.
    """

    def __init__(
        self,
        d_text: int,
        d_speech: int,
        d_graph: int,
        d_model: int = 128,
        n_experts: int = 5,
        k: int = 1,
        n_classes: int = 7,
        n_heads: int = 4,
        ffn_mult: int = 2,
        dropout: float = 0.1,
        gate_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.text_proj = Projection(d_text, d_model, dropout)
        self.speech_proj = Projection(d_speech, d_model, dropout)
        self.graph_proj = Projection(d_graph, d_model, dropout)
        self.gate = TopKGate(3 * d_model, n_experts, k, gate_noise)
        self.experts = nn.ModuleList(
            CrossAttentionExpert(d_model, n_heads, ffn_mult, dropout) for _ in range(n_experts)
        )
        self.head = MLPHead(d_model, n_classes, dropout=dropout)

    def forward(
        self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, graph: Tensor
    ) -> BranchOutput:
        """``text [B, T, Dt]``, ``text_mask [B, T]``, ``speech [B, F, Ds]``, ``speech_mask [B, F]``,
        ``graph [B, Dg]``; padded positions must be finite (``ComplementaryFusion.fuse`` zeroes them)."""
        text, text_mask = clean_padding(text, text_mask, zero=False)  # trimming only: a free view
        speech, speech_mask = clean_padding(speech, speech_mask, zero=False)
        t, s, g = self.text_proj(text), self.speech_proj(speech), self.graph_proj(graph)
        gate = self.gate(torch.cat([masked_mean(t, text_mask), masked_mean(s, speech_mask), g], -1))
        fused = dispatch_experts(self.experts, gate, self.d_model, t, text_mask, s, speech_mask, g)
        return BranchOutput(logits=self.head(fused), gate=gate)


# ---- SP-MoE -------------------------------------------------------------------------------------------


class SumProductExpert(nn.Sequential):
    """A linear projection expert: ``Linear(d_in, d_model) -> GELU -> Dropout``."""

    def __init__(self, d_in: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__(nn.Linear(d_in, d_model), nn.GELU(), nn.Dropout(dropout))


def sum_product_features(t: Tensor, s: Tensor, g: Tensor | None = None) -> Tensor:
    """The SP-MoE feature ``[t, s, t+s, t*s(, g)]`` of pooled utterance vectors ``[B, d]``."""
    parts = [t, s, t + s, t * s] + ([g] if g is not None else [])
    return torch.cat(parts, -1)


class SPMoE(nn.Module):
    """Sum-Product Linear MoE branch -> logits ``[B, n_classes]`` + load-balancing loss.

    ``t``, ``s``: masked-mean-pooled text / speech states projected to ``d_model`` (zeros for a
    missing modality; ``speech_pooling="mean+std"`` pools the speech frames' mean and SD); ``g``: the projected graph embedding; the feature ``[t, s, t+s, t*s, g]``
    (``5 * d_model``) is gated and routed to the top-``k`` :class:`SumProductExpert`.
    """

    def __init__(
        self,
        d_text: int,
        d_speech: int,
        d_graph: int,
        d_model: int = 128,
        n_experts: int = 5,
        k: int = 2,
        n_classes: int = 7,
        dropout: float = 0.1,
        gate_noise: float = 0.0,
        speech_pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.text_pool = PooledProjection(d_text, d_model, dropout)
        self.speech_pool = PooledProjection(d_speech, d_model, dropout, speech_pooling)
        self.graph_proj = Projection(d_graph, d_model, dropout)
        self.gate = TopKGate(5 * d_model, n_experts, k, gate_noise)
        self.experts = nn.ModuleList(SumProductExpert(5 * d_model, d_model, dropout) for _ in range(n_experts))
        self.head = MLPHead(d_model, n_classes, dropout=dropout)

    def forward(
        self, text: Tensor, text_mask: Tensor, speech: Tensor, speech_mask: Tensor, graph: Tensor
    ) -> BranchOutput:
        """Same inputs as :meth:`CAMoE.forward` (padded positions finite)."""
        feature = sum_product_features(
            self.text_pool(text, text_mask), self.speech_pool(speech, speech_mask), self.graph_proj(graph)
        )
        gate = self.gate(feature)
        fused = dispatch_experts(self.experts, gate, self.d_model, feature)
        return BranchOutput(logits=self.head(fused), gate=gate)
