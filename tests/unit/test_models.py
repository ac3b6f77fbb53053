"""The emotion models: shapes, gradients, routing, masks, config, and a tiny overfit run."""

import time

import numpy as np
import pytest
import torch

from shared.settings import EMOTIONS
from training.models import (
    MODELS,
    CAMoE,
    ComplementaryFusion,
    FusionBatch,
    FusionConfig,
    TimeAlignedGAT,
    TopKGate,
    build_model,
    fusion_loss,
)
from training.models.layers import PooledProjection, clean_padding, masked_mean, masked_mean_std
from training.models.moe import load_balancing_loss
from training.models.profile import measure_latency, parameter_count, synthetic_batch

SMALL = FusionConfig(
    d_text=24,
    d_speech=20,
    d_graph=16,
    d_model=16,
    gat_hidden=16,
    gat_heads=2,
    n_heads=2,
    baseline_hidden=16,
    max_tokens=16,
    max_frames=32,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and immune to other processes on a shared 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def batch_of(n: int, seed: int = 0, config: FusionConfig = SMALL) -> FusionBatch:
    """Synthetic utterances of 0.3-1.5 s: some with padded frames (< 32), some pooled (> 32)."""
    return synthetic_batch(config, n, seed=seed, duration=(0.3, 1.5))


def model_of(name: str, config: FusionConfig = SMALL, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, config)


def test_registry_names():
    assert set(MODELS) == {
        "proposed",
        "ca_moe",
        "sp_moe",
        "bilstm_text",
        "cnn_speech",
        "mlp_graph",
        "early_fusion",
        "late_fusion",
    }
    with pytest.raises(KeyError, match="unknown model"):
        build_model("transformer", SMALL)
    assert set(build_model("proposed", SMALL).branches) == {"ca_moe", "sp_moe"}
    assert set(build_model("ca_moe", SMALL).branches) == {"ca_moe"}
    assert set(build_model("sp_moe", SMALL).branches) == {"sp_moe"}
    assert build_model("sp_moe", SMALL.to_dict()).registry_name == "sp_moe"


# ---- every registered model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [1, 3])
def test_forward_shapes_and_probabilities(name, size):
    model = model_of(name).eval()
    out = model(batch_of(size))
    assert out.logits.shape == out.probs.shape == (size, 7)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.probs).all()
    assert torch.allclose(out.probs.sum(-1), torch.ones(size), atol=1e-5)
    assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
    for z in out.branch_logits.values():
        assert z.shape == (size, 7)
    if name in ("proposed", "ca_moe", "sp_moe"):
        assert set(out.branch_logits) == set(model.branches) and out.aux_loss > 0
        assert out.graph is not None and out.graph.shape == (size, SMALL.d_graph)
    assert out["probs"] is out.probs


def _groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Parameter groups: names cut after three components, expert/layer indices removed."""
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        key = ".".join(p for p in name.split(".")[:3] if not p.isdigit())
        groups.setdefault(key, []).append(name)
    return groups


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_training_step_updates_every_parameter_group(name):
    model = model_of(name).train()
    batch = batch_of(6, seed=1)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(batch)
    fusion_loss(out, batch.labels, aux_weight=0.01, branch_weight=0.5).backward()
    optim.step()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    groups = _groups(model)
    assert len(groups) >= 3
    stale = [g for g, names in groups.items() if not changed & set(names)]
    assert not stale, f"no gradient reached {stale}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deterministic_in_eval_mode(name):
    model = model_of(name).eval()
    batch = batch_of(3)
    with torch.no_grad():
        a, b = model(batch), model(batch)
    assert torch.equal(a.logits, b.logits)
    model.train()
    with torch.no_grad():
        c, d = model(batch), model(batch)
    assert not torch.equal(c.logits, d.logits)  # dropout is active in training mode


def _scramble_padding(batch: FusionBatch, fill: float | None = None) -> FusionBatch:
    g = torch.Generator().manual_seed(7)
    text = torch.where(batch.text_mask[..., None], batch.text, torch.randn(batch.text.shape, generator=g) * 100)
    speech = torch.where(batch.speech_mask[..., None], batch.speech, torch.randn(batch.speech.shape, generator=g) * 100)
    if fill is not None:
        text = text.masked_fill(~batch.text_mask[..., None], fill)
        speech = speech.masked_fill(~batch.speech_mask[..., None], fill)
    return FusionBatch(text, batch.text_mask, speech, batch.speech_mask, batch.edge_index, batch.labels)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("fill", [None, float("nan")])
def test_padded_positions_do_not_change_the_output(name, fill):
    model = model_of(name).eval()
    batch = batch_of(3, seed=2)
    assert (~batch.text_mask).any() and (~batch.speech_mask).any()
    with torch.no_grad():
        ref = model(batch)
        out = model(_scramble_padding(batch, fill))
    assert torch.allclose(ref.logits, out.logits, atol=1e-6, rtol=0)
    # while the valid positions do matter
    changed = FusionBatch(batch.text * 2, batch.text_mask, batch.speech * 2, batch.speech_mask, batch.edge_index)
    with torch.no_grad():
        assert not torch.allclose(ref.logits, model(changed).logits, atol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_utterance_gets_the_same_output_alone_and_in_a_batch(name):
    model = model_of(name).eval()
    batch = batch_of(3, seed=3)
    with torch.no_grad():
        together = model(batch).logits
        for b in range(3):
            alone = batch_of(3, seed=3)  # same data, then cut utterance b out with its edges
            stride = alone.num_tokens + alone.num_frames
            owner = alone.edge_index[0] // stride
            edges = alone.edge_index[:, owner == b] - b * stride
            single = FusionBatch(
                alone.text[b : b + 1],
                alone.text_mask[b : b + 1],
                alone.speech[b : b + 1],
                alone.speech_mask[b : b + 1],
                edges,
            )
            assert torch.allclose(model(single).logits[0], together[b], atol=1e-5), b


@pytest.mark.parametrize("name", sorted(MODELS))
def test_empty_graphs_and_missing_modalities_stay_finite(name):
    model = model_of(name).eval()
    batch = batch_of(3, seed=4)
    batch.edge_index = torch.zeros(2, 0, dtype=torch.long)
    batch.text_mask[1] = False  # utterance 1: no transcript
    batch.speech_mask[2] = False  # utterance 2: no audio frames
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.probs).all() and torch.isfinite(out.aux_loss)
    # the whole batch without text, then without anything
    batch.text_mask[:] = False
    with torch.no_grad():
        assert torch.isfinite(model(batch).probs).all()
        batch.speech_mask[:] = False
        assert torch.isfinite(model(batch).probs).all()


def test_models_accept_numpy_mappings_and_precomputed_graphs():
    model = model_of("proposed").eval()
    batch = batch_of(3)
    with torch.no_grad():
        ref = model(batch)
        as_numpy = {k: v.numpy() for k, v in batch.as_dict().items() if v is not None and k != "labels"}
        assert torch.allclose(model(as_numpy).logits, ref.logits, atol=1e-6)
        graph = model.gat(batch.text, batch.text_mask, batch.speech, batch.speech_mask, batch.edge_index)
        fused = model.fuse(batch.text, batch.text_mask, batch.speech, batch.speech_mask, graph)
        assert torch.allclose(fused.logits, ref.logits, atol=1e-6)
        batch.graph = torch.zeros_like(graph)  # a precomputed graph embedding replaces the GAT
        assert not torch.allclose(model(batch).logits, ref.logits, atol=1e-4)
    with pytest.raises(KeyError):
        model({**as_numpy, "audio": np.zeros(3)})


# ---- the time-aligned GAT -----------------------------------------------------------------------------


def test_gat_uses_the_time_aligned_edges():
    torch.manual_seed(0)
    gat = TimeAlignedGAT(SMALL.d_text, SMALL.d_speech, 16, 16, heads=2).eval()
    batch = batch_of(3, seed=5)
    with torch.no_grad():
        with_edges = gat(batch.text, batch.text_mask, batch.speech, batch.speech_mask, batch.edge_index)
        without = gat(batch.text, batch.text_mask, batch.speech, batch.speech_mask, batch.edge_index[:, :0])
    assert with_edges.shape == (3, 16) and torch.isfinite(without).all()
    assert not torch.allclose(with_edges, without, atol=1e-4)
    # edges touching padding nodes (a malformed edge set) are ignored
    stride = batch.num_tokens + batch.num_frames
    pad_token = int((~batch.text_mask[0]).nonzero()[0])
    bad = torch.cat([batch.edge_index, torch.tensor([[pad_token], [batch.num_tokens]])], 1)
    with torch.no_grad():
        assert torch.allclose(
            gat(batch.text, batch.text_mask, batch.speech, batch.speech_mask, bad), with_edges, atol=1e-6
        )
    assert stride == 48


def test_dense_gat_is_the_gat_on_the_adjacency():
    """``TimeAlignedGAT.dense`` (what the served graph_gat exports) gives the edge-list GAT's embedding:
    with edges, without any, with an utterance missing its text, and with NaN in the padding."""
    torch.manual_seed(1)
    gat = TimeAlignedGAT(SMALL.d_text, SMALL.d_speech, 16, 16, heads=2, layers=2).eval()
    batch = batch_of(4, seed=7)
    batch.text_mask[2] = False  # an utterance without text: its frames keep their self loops only
    owner = batch.edge_index[0] // (batch.num_tokens + batch.num_frames)
    edges = batch.edge_index[:, owner != 2]
    text = batch.text.masked_fill(~batch.text_mask.unsqueeze(-1), float("nan"))
    adjacency = torch.zeros(4, batch.num_tokens, batch.num_frames, dtype=torch.bool)
    stride = batch.num_tokens + batch.num_frames
    token, frame = edges[0] % stride, edges[1] % stride - batch.num_tokens
    adjacency[edges[0] // stride, token, frame] = True
    with torch.no_grad():
        expected = gat(text, batch.text_mask, batch.speech, batch.speech_mask, edges)
        dense = gat.dense(text, batch.text_mask, batch.speech, batch.speech_mask, adjacency)
        torch.testing.assert_close(dense, expected, atol=1e-5, rtol=1e-5)
        no_edges = gat.dense(text, batch.text_mask, batch.speech, batch.speech_mask, torch.zeros_like(adjacency))
        torch.testing.assert_close(
            no_edges, gat(text, batch.text_mask, batch.speech, batch.speech_mask, edges[:, :0]), atol=1e-5, rtol=1e-5
        )
    assert not torch.allclose(dense, no_edges, atol=1e-4)
    with pytest.raises(RuntimeError, match="eval"):
        gat.train().dense(text, batch.text_mask, batch.speech, batch.speech_mask, adjacency)


# ---- gating and experts -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_gate_routes_each_utterance_to_k_experts(k):
    torch.manual_seed(0)
    gate = TopKGate(8, n_experts=5, k=k)
    out = gate(torch.randn(10, 8))
    assert ((out.combine > 0).sum(-1) == k).all()
    assert out.indices.shape == (10, k)
    assert torch.equal(out.combine.gather(-1, out.indices) > 0, torch.ones(10, k, dtype=torch.bool))
    if k == 1:  # Switch: the raw probability of the chosen expert
        assert torch.allclose(out.combine.sum(-1), out.probs.max(-1).values)
    else:  # GShard: renormalised over the k chosen experts
        assert torch.allclose(out.combine.sum(-1), torch.ones(10))


@pytest.mark.parametrize("k", [1, 2])
def test_ca_moe_runs_each_utterance_through_k_experts(k):
    torch.manual_seed(0)
    branch = CAMoE(SMALL.d_text, SMALL.d_speech, SMALL.d_graph, d_model=16, n_experts=5, k=k, n_heads=2).eval()
    rows = []
    for expert in branch.experts:
        expert.register_forward_hook(lambda mod, args, out: rows.append(out.shape[0]))
    batch = batch_of(4)
    with torch.no_grad():
        out = branch(batch.text, batch.text_mask, batch.speech, batch.speech_mask, torch.randn(4, SMALL.d_graph))
    assert sum(rows) == k * 4
    assert ((out.gate.combine > 0).sum(-1) == k).all()


def test_load_balancing_loss_is_minimal_for_uniform_routing():
    n, e = 40, 5
    uniform = torch.full((n, e), 1.0 / e)
    balanced = torch.arange(n).remainder(e).unsqueeze(1)
    assert load_balancing_loss(uniform, balanced).item() == pytest.approx(1.0)
    collapsed = torch.zeros(n, e)
    collapsed[:, 0] = 1.0
    assert load_balancing_loss(collapsed, torch.zeros(n, 1, dtype=torch.long)).item() == pytest.approx(e)
    assert load_balancing_loss(torch.softmax(torch.randn(n, e) * 3, -1), torch.randint(0, e, (n, 2))).item() > 0

    # minimising the aux loss alone drives a collapsed gate towards balanced routing
    torch.manual_seed(0)
    gate = TopKGate(8, n_experts=e, k=1)
    with torch.no_grad():
        gate.proj.bias.copy_(torch.tensor([4.0, 0, 0, 0, 0]))
    x = torch.randn(256, 8)
    start = gate(x)
    optim = torch.optim.Adam(gate.parameters(), lr=0.05)
    for _ in range(200):
        optim.zero_grad()
        gate(x).aux_loss.backward()
        optim.step()
    end = gate(x)
    share = torch.bincount(end.indices[:, 0], minlength=e).float() / len(x)
    assert end.aux_loss < start.aux_loss and start.aux_loss > 3.5
    assert share.max() < 0.4 and end.aux_loss.item() < 1.1


# ---- late fusion and config ---------------------------------------------------------------------------


def test_late_fusion_starts_with_the_papers_complementarity():
    model = model_of("proposed")
    w = model.late_fusion.weights().detach()  # [branch, class]
    ca, sp = list(model.branches).index("ca_moe"), list(model.branches).index("sp_moe")
    idx = {name: i for i, name in enumerate(EMOTIONS)}
    for name in ("fear", "sadness"):
        assert w[ca, idx[name]] == pytest.approx(0.75)
    for name in ("anger", "happiness"):
        assert w[sp, idx[name]] == pytest.approx(0.75)
    for name in ("neutral", "disgust", "surprise"):
        assert w[ca, idx[name]] == pytest.approx(0.5)
    assert torch.allclose(w.sum(0), torch.ones(7))


def test_single_branch_model_outputs_its_branch_distribution():
    model = model_of("sp_moe").eval()
    with torch.no_grad():
        out = model(batch_of(3))
    assert torch.allclose(out.probs, torch.softmax(out.branch_logits["sp_moe"], -1), atol=1e-6)


def test_the_voice_statistics_branch_reads_the_voices_mean_and_spread_only():
    config = SMALL.replace(branches=("ca", "sp", "vs"))
    assert FusionConfig.from_dict(config.to_dict()) == config
    model = model_of("proposed", config).eval()
    assert list(model.branches) == ["ca_moe", "sp_moe", "voice_stats"]
    stats = model.branches["voice_stats"]
    assert sum(p.numel() for p in stats.parameters()) == (2 * config.d_speech + 1) * config.n_classes
    batch = batch_of(3, seed=4, config=config)
    with torch.no_grad():
        ref = model(batch)
        vs = ref.branch_logits["voice_stats"]
        expected = stats.classify(masked_mean_std(batch.speech, batch.speech_mask))
        assert torch.allclose(vs, expected, atol=1e-5)
        # the words do not move it, nor does the padding; the late fusion mixes it in
        other_words = FusionBatch(
            torch.randn_like(batch.text), batch.text_mask, batch.speech, batch.speech_mask, batch.edge_index
        )
        assert torch.allclose(model(other_words).branch_logits["voice_stats"], vs, atol=1e-5)
        assert torch.allclose(model(_scramble_padding(batch, float("nan"))).branch_logits["voice_stats"], vs, atol=1e-5)
        assert model.late_fusion.weights().shape == (3, config.n_classes)
        # no speech (a text line, or the speech dropped in training): uniform, no class pushed
        silent = FusionBatch(
            batch.text, batch.text_mask, batch.speech, torch.zeros_like(batch.speech_mask), batch.edge_index
        )
        assert model(silent).branch_logits["voice_stats"].abs().max() == 0
    assert ref.aux_loss.isfinite() and set(ref.expert_weights) == set(ref.branch_logits)
    # standardised with the training utterances' statistics, as the probe standardises its features
    training = [batch_of(8, seed=s, config=config) for s in (5, 6)]
    assert model.fit_voice_scaler(training) == 16
    with torch.no_grad():
        raw = torch.cat([stats.statistics(b.speech, b.speech_mask) for b in training])
        z = (raw - stats.stats_mean) / stats.stats_scale
        assert torch.allclose(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4)
        assert torch.allclose(z.std(0), torch.ones(z.shape[1]), atol=1e-3)
        assert not torch.allclose(model(batch).branch_logits["voice_stats"], vs)
    assert model_of("proposed").fit_voice_scaler(training) == 0  # the paper's model has no such branch
    with pytest.raises(ValueError, match="statistics"):
        stats.fit_scaler(raw[:1])


def test_config_round_trips_and_validates(tmp_path):
    config = SMALL.replace(branches=("sp",), favoured_classes={"sp": ("anger",)}, ca_top_k=1)
    assert FusionConfig.from_dict(config.to_dict()) == config
    assert FusionConfig.from_yaml(config.to_yaml()) == config
    config.to_yaml(tmp_path / "c.yaml")
    assert FusionConfig.from_yaml(tmp_path / "c.yaml") == config
    assert isinstance(config.to_dict()["class_names"], list)
    assert FusionConfig().class_names == EMOTIONS and FusionConfig().n_experts == 5
    for bad in (
        {"branches": ("cnn",)},
        {"sp_top_k": 6},
        {"n_classes": 6},
        {"d_model": 31},
        {"favour": 1.0},
        {"favoured_classes": {"ca": ("joy",)}},
        {"edge_rule": "nearest"},
    ):
        with pytest.raises(ValueError):
            SMALL.replace(**bad)
    with pytest.raises(ValueError, match="unknown"):
        FusionConfig.from_dict({"d_txt": 3})
    model = ComplementaryFusion.from_config(config.to_dict())
    assert model.config == config and set(model.branches) == {"sp_moe"}
    # another label set (IEMOCAP's 4 classes): the paper's favoured classes that exist are kept
    four = SMALL.replace(n_classes=4, class_names=("neutral", "anger", "sadness", "happiness"), favoured_classes=None)
    assert four.favoured_classes == {"ca": ("sadness",), "sp": ("anger", "happiness")}
    assert build_model("proposed", four)(batch_of(2, config=four)).probs.shape == (2, 4)


def test_pooling_helpers():
    x = torch.tensor([[[1.0], [3.0], [1e30]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(x, mask).tolist() == [[2.0], [0.0]]
    x[0, 2] = float("nan")
    cleaned, m = clean_padding(x, mask)
    assert cleaned.shape == (2, 2, 1) and cleaned[1].abs().sum() == 0 and m.shape == (2, 2)
    assert masked_mean(cleaned, m).tolist() == [[2.0], [0.0]]
    mask[1, 2] = True  # nothing to trim now, but the NaN is zeroed
    cleaned, _ = clean_padding(x, mask)
    assert cleaned.shape == (2, 3, 1) and torch.isfinite(cleaned).all() and cleaned[0, 2, 0] == 0
    assert clean_padding(x, mask, zero=False)[0].isnan().any()
    assert clean_padding(x, torch.zeros(2, 3, dtype=torch.bool))[0].shape == (2, 1, 1)


def test_statistics_pooling_gives_the_mean_and_sd_of_the_valid_frames_only():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False], [False] * 6])
    pooled = masked_mean_std(x, mask, eps=0.0)
    assert pooled.shape == (3, 8)
    for b, n in ((0, 6), (1, 3)):
        assert torch.allclose(pooled[b, :4], x[b, :n].mean(0), atol=1e-6)
        assert torch.allclose(pooled[b, 4:], x[b, :n].std(0, unbiased=False), atol=1e-5)
    pool = PooledProjection(4, 5, dropout=0.0, pooling="mean+std").eval()
    assert pool(x, mask)[2].abs().sum() == 0  # a missing modality stays zeros
    # same frame mean, twice the spread: only statistics pooling tells them apart
    centred = x[:1] - x[:1].mean(1, keepdim=True)
    spread = torch.cat([centred, 2 * centred])
    full = torch.ones(2, 6, dtype=torch.bool)
    assert not torch.allclose(pool(spread, full)[0], pool(spread, full)[1])
    mean_only = PooledProjection(4, 5, dropout=0.0).eval()
    assert torch.allclose(mean_only(spread, full)[0], mean_only(spread, full)[1], atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        PooledProjection(4, 5, pooling="max")
    with pytest.raises(ValueError, match="speech_pooling"):
        SMALL.replace(speech_pooling="median")


@pytest.mark.parametrize("name", ["proposed", "early_fusion", "late_fusion"])
def test_statistically_pooled_models_ignore_padding_and_read_the_speech_spread(name):
    config = SMALL.replace(speech_pooling="mean+std")
    model = model_of(name, config).eval()
    batch = batch_of(3, seed=2, config=config)
    with torch.no_grad():
        ref = model(batch).logits
        assert torch.allclose(ref, model(_scramble_padding(batch, float("nan"))).logits, atol=1e-6, rtol=0)
        # every frame moved away from its utterance's mean by half as much: same means, new SDs
        mean = masked_mean(batch.speech, batch.speech_mask).unsqueeze(1)
        calmer = torch.where(batch.speech_mask[..., None], mean + (batch.speech - mean) / 2, batch.speech)
        changed = FusionBatch(batch.text, batch.text_mask, calmer, batch.speech_mask, batch.edge_index)
        assert not torch.allclose(ref, model(changed).logits, atol=1e-4)


def test_profile_utilities():
    model = model_of("sp_moe")
    assert parameter_count(model) == sum(p.numel() for p in model.parameters()) > 0
    ms = measure_latency(model, batch_size=2, repeats=2, warmup=1, threads=1, stage="fusion")
    assert ms > 0 and model.training  # mode restored


# ---- learning -----------------------------------------------------------------------------------------


def test_complementary_fusion_overfits_a_toy_problem():
    """Classes 0, 2, 4, 6 are written in the speech frames, 1, 3, 5 in the text tokens; the other
    modality is noise.  The proposed model must learn to read each class from its modality."""
    torch.manual_seed(0)
    config = SMALL.replace(dropout=0.0)
    per_class, n = 5, 35
    batch = batch_of(n, seed=9, config=config)
    labels = torch.arange(n) % 7
    prototypes_t, prototypes_s = torch.randn(7, config.d_text), torch.randn(7, config.d_speech)
    text = torch.randn_like(batch.text)
    speech = torch.randn_like(batch.speech)
    in_speech = labels % 2 == 0
    speech[in_speech] += prototypes_s[labels[in_speech]].unsqueeze(1)
    text[~in_speech] += prototypes_t[labels[~in_speech]].unsqueeze(1)
    batch = FusionBatch(
        text * batch.text_mask[..., None],
        batch.text_mask,
        speech * batch.speech_mask[..., None],
        batch.speech_mask,
        batch.edge_index,
        labels,
    )
    assert per_class * 7 == n

    model = ComplementaryFusion(config).train()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=True)
    start = time.perf_counter()
    for _ in range(60):
        optim.zero_grad()
        fusion_loss(model(batch), labels, config.aux_loss_weight, config.branch_loss_weight).backward()
        optim.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(batch).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.9, accuracy
    assert time.perf_counter() - start < 20


def test_without_takes_a_modality_away_as_if_the_utterance_never_had_it():
    batch = batch_of(4, seed=3)
    assert (batch.edge_counts > 0).all()
    drop_text = torch.tensor([True, False, False, False])
    drop_speech = torch.tensor([False, True, False, False])
    out = batch.without(drop_text, drop_speech)
    assert not out.text_mask[0].any() and not out.text[0].any() and out.speech_mask[0].equal(batch.speech_mask[0])
    assert not out.speech_mask[1].any() and not out.speech[1].any() and out.text[1].equal(batch.text[1])
    assert out.edge_counts.tolist() == [0, 0, *batch.edge_counts[2:].tolist()]
    for name in ("text", "text_mask", "speech", "speech_mask"):
        assert getattr(out, name)[2:].equal(getattr(batch, name)[2:])
    # the model reads a dropped modality exactly as a missing one: the same output as a batch
    # that never had it (utterance 0 without its text, alone)
    model = model_of("proposed").eval()
    alone = batch_of(4, seed=3)
    alone = alone.without(torch.tensor([True, True, True, True]), torch.zeros(4, dtype=torch.bool))
    with torch.no_grad():
        a = model(out).probs[0]
        b = model(alone).probs[0]
    torch.testing.assert_close(a, b)


def test_modality_dropout_never_drops_both_nor_the_only_modality():
    from training.train import drop_modalities

    batch = batch_of(64, seed=1)
    text_only = torch.zeros(64, dtype=torch.bool)
    text_only[:8] = True  # utterances from a text corpus: no speech at all
    batch = batch.without(torch.zeros(64, dtype=torch.bool), text_only)
    rng = np.random.default_rng(0)
    dropped_text = dropped_speech = 0
    for _ in range(20):
        out = drop_modalities(batch, 0.5, 0.5, rng)
        has_text, has_speech = out.text_mask.any(1), out.speech_mask.any(1)
        assert (has_text | has_speech).all()  # never both
        assert has_text[:8].all()  # the only modality stays
        dropped_text += int((~has_text[8:]).sum())
        dropped_speech += int((~has_speech[8:]).sum())
    n = 20 * 56
    assert 0.4 * n < dropped_text < 0.6 * n  # p_text = 0.5
    assert 0.15 * n < dropped_speech < 0.35 * n  # 0.5 of those that kept their text
    assert drop_modalities(batch, 0.0, 0.0, rng).text_mask.equal(batch.text_mask)


# ---- per-speaker normalisation ---------------------------------------------------------------------------


def test_speaker_normalisation_blends_the_baseline_with_the_prior():
    from training.models.layers import SpeakerNormalisation

    norm = SpeakerNormalisation(2, prior_weight=2.0)
    norm.fit_prior(torch.tensor([1.0, -1.0]), torch.tensor([4.0, 1.0]))
    speech = torch.tensor([[[3.0, 0.0], [5.0, 2.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    first = norm(speech, mask, None, None, None)  # a speaker's first utterance: the prior alone
    torch.testing.assert_close(first[0, :2], torch.tensor([[1.0, 1.0], [2.0, 3.0]]), atol=1e-4, rtol=0)
    assert first[0, 2].eq(0).all()  # padding stays zero
    # 2 earlier utterances with mean (3, 1) and variance (0, 1), equal weight with k0 = 2: mean (2, 0), var (2, 1)
    later = norm(speech, mask, torch.tensor([2.0]), torch.tensor([[3.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(
        later[0, :2], torch.tensor([[1.0, 0.0], [3.0, 2.0]]) / torch.tensor([2.0, 1.0]).sqrt(), atol=1e-3, rtol=0
    )
    # count 0 is the prior alone, whatever the mean and variance say
    torch.testing.assert_close(norm(speech, mask, torch.tensor([0.0]), torch.ones(1, 2), torch.ones(1, 2)), first)


def test_a_speaker_normalised_model_reads_the_baseline_and_round_trips_its_prior(tmp_path):
    from training.checkpoint import ModelMeta, load_model, save_model

    config = FusionConfig(**{**SMALL.to_dict(), "speaker_norm": True})
    model = model_of("proposed", config).eval()
    model.speaker_norm.fit_prior(torch.full((SMALL.d_speech,), 0.3), torch.full((SMALL.d_speech,), 2.0))
    batch = batch_of(3, seed=2, config=config)
    with torch.no_grad():
        prior_only = model(batch).probs
        with_baseline = model(
            FusionBatch(
                **{
                    **batch.as_dict(),
                    "speaker_count": torch.tensor([0.0, 4.0, 4.0]),
                    "speaker_mean": torch.ones(3, SMALL.d_speech),
                    "speaker_var": torch.full((3, SMALL.d_speech), 0.5),
                }
            )
        ).probs
    torch.testing.assert_close(with_baseline[0], prior_only[0])  # count 0: the prior alone
    assert not torch.allclose(with_baseline[1:], prior_only[1:], atol=1e-4)
    save_model(tmp_path, model, ModelMeta("proposed", config.to_dict(), list(config.class_names), seed=0))
    loaded, _ = load_model(tmp_path)
    torch.testing.assert_close(loaded.speaker_norm.prior_var, model.speaker_norm.prior_var)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).probs, prior_only)
    assert model_of("proposed").speaker_norm is None  # off by default: the paper's raw frames
