"""The paper's baselines, with the proposed model's forward signature (``model(batch) -> FusionOutput``).

* :class:`BiLSTMText`: text only, a bidirectional LSTM over the text encoder's token states.
* :class:`CNNSpeech`: speech only, a 1-D CNN over the speech encoder's frames.
* :class:`MLPGraph`: graph only, an MLP on the time-aligned GAT's graph embedding (the GAT is part
  of the baseline and trained end to end with it; a precomputed ``batch.graph`` is used as is).
* :class:`EarlyFusion`: ``[pooled t; pooled s; g] -> MLP``.
* :class:`LateFusion`: one classifier per modality (text, speech, graph), probabilities averaged.

Every baseline ignores padded positions (same masks as the proposed model) and uses
``FusionConfig.baseline_hidden`` as its width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .base import EmotionModel, FusionOutput
from .batch import FusionBatch
from .config import ConfigLike
from .graph import TimeAlignedGAT
from .layers import MLPHead, PooledProjection, clean_padding, masked_mean, present


class BiLSTMText(EmotionModel):
    """BiLSTM over the token states (packed by the number of valid tokens; masks are prefixes, as
    the text encoder emits them), final forward/backward states -> MLP."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        c = self.config
        self.dropout = nn.Dropout(c.dropout)
        self.lstm = nn.LSTM(c.d_text, c.baseline_hidden, batch_first=True, bidirectional=True)
        self.head = MLPHead(2 * c.baseline_hidden, c.n_classes, c.baseline_hidden, c.dropout)

    def predict(self, batch: FusionBatch) -> FusionOutput:
        x, mask = clean_padding(batch.text, batch.text_mask)
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.dropout(x), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return FusionOutput.from_logits(self.head(torch.cat([h[0], h[1]], -1) * present(mask)))


class CNNSpeech(EmotionModel):
    """Two ``Conv1d`` layers (``cnn_kernel`` wide, GELU) over the frames, padding re-zeroed after
    each layer, masked mean over the valid frames -> MLP."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        c = self.config
        k, h = c.cnn_kernel, c.baseline_hidden
        self.convs = nn.ModuleList([nn.Conv1d(c.d_speech, h, k, padding=k // 2), nn.Conv1d(h, h, k, padding=k // 2)])
        self.dropout = nn.Dropout(c.dropout)
        self.head = MLPHead(h, c.n_classes, h, c.dropout)

    def predict(self, batch: FusionBatch) -> FusionOutput:
        x, mask = clean_padding(batch.speech, batch.speech_mask)
        h, pad = x.transpose(1, 2), ~mask.unsqueeze(1)
        for conv in self.convs:
            h = self.dropout(nn.functional.gelu(conv(h)).masked_fill(pad, 0.0))
        return FusionOutput.from_logits(self.head(masked_mean(h.transpose(1, 2), mask)))


class MLPGraph(EmotionModel):
    """MLP on the time-aligned GAT's graph embedding."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        c = self.config
        self.gat = TimeAlignedGAT.from_config(c)
        self.head = MLPHead(c.d_graph, c.n_classes, c.baseline_hidden, c.dropout)

    def predict(self, batch: FusionBatch) -> FusionOutput:
        graph = batch.graph_embedding(self.gat)
        return FusionOutput.from_logits(self.head(graph), graph=graph)


class EarlyFusion(EmotionModel):
    """Feature-level fusion: ``[pooled text; pooled speech; graph embedding] -> MLP``."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        c = self.config
        self.gat = TimeAlignedGAT.from_config(c)
        self.text_pool = PooledProjection(c.d_text, c.baseline_hidden, c.dropout)
        self.speech_pool = PooledProjection(c.d_speech, c.baseline_hidden, c.dropout, c.speech_pooling)
        self.head = MLPHead(2 * c.baseline_hidden + c.d_graph, c.n_classes, c.baseline_hidden, c.dropout)

    def predict(self, batch: FusionBatch) -> FusionOutput:
        graph = batch.graph_embedding(self.gat)
        feature = torch.cat(
            [
                self.text_pool(*clean_padding(batch.text, batch.text_mask)),
                self.speech_pool(*clean_padding(batch.speech, batch.speech_mask)),
                graph,
            ],
            -1,
        )
        return FusionOutput.from_logits(self.head(feature), graph=graph)


class LateFusion(EmotionModel):
    """Decision-level fusion: text, speech and graph classifiers, probabilities averaged
    (``logits = log(mean probs)``; each modality's logits in ``branch_logits``)."""

    def __init__(self, config: ConfigLike = None) -> None:
        super().__init__(config)
        c = self.config
        h = c.baseline_hidden
        self.gat = TimeAlignedGAT.from_config(c)
        self.text_pool = PooledProjection(c.d_text, h, c.dropout)
        self.speech_pool = PooledProjection(c.d_speech, h, c.dropout, c.speech_pooling)
        self.heads = nn.ModuleDict(
            {
                "text": MLPHead(h, c.n_classes, h, c.dropout),
                "speech": MLPHead(h, c.n_classes, h, c.dropout),
                "graph": MLPHead(c.d_graph, c.n_classes, h, c.dropout),
            }
        )

    def predict(self, batch: FusionBatch) -> FusionOutput:
        graph = batch.graph_embedding(self.gat)
        features = {
            "text": self.text_pool(*clean_padding(batch.text, batch.text_mask)),
            "speech": self.speech_pool(*clean_padding(batch.speech, batch.speech_mask)),
            "graph": graph,
        }
        branch_logits = {name: self.heads[name](x) for name, x in features.items()}
        probs = torch.stack([torch.softmax(z, -1) for z in branch_logits.values()]).mean(0)
        return FusionOutput(logits=probs.clamp_min(1e-12).log(), probs=probs, branch_logits=branch_logits, graph=graph)
