"""The five Triton models against the in-process pipeline, on a real Triton.

A small trained model folder (random weights, fixed seed) is saved under a temporary home, the
repository is exported with ``emotion export``'s function, and Triton alone is started on free
ports (it loads every model of the repository).  Three espeak-ng utterances then go through
``asr -> text_encoder / speech_encoder -> graph_gat -> moe_fusion`` in Triton and through the same
code in-process (``training.encoders`` + ``training.models``):

* ASR words equal; encoder outputs equal within float16 rounding;
* the graph embedding and the fused probabilities equal to 1e-4 given the same features;
* several utterances in one request, and concurrent requests, give the per-utterance results;
* a re-export with new weights writes version 2, which Triton serves after a reload, and a
  rollback serves version 1 again.

Run with ``-s`` to see the start time, memory and per-model latency figures.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.settings import Settings
from shared.triton_client import TritonModel
from tests.integration.conftest import isolated_settings, save_random_model

pytestmark = pytest.mark.integration

SENTENCES = (
    "I am really angry about this bill.",
    "Thank you so much, you have been very helpful today.",
    "Why does nobody ever call me back?",
)
SEED = 1234
ASR_OUT = ["TEXT", "LANGUAGE", "WORDS", "DURATION", "WINDOW"]
TEXT_OUT = ["HIDDEN", "MASK", "OFFSETS"]
SPEECH_OUT = ["FRAMES", "MASK", "FRAME_TIMES", "DURATION"]
GRAPH_OUT = ["GRAPH", "EDGES"]
FUSION_OUT = ["PROBS", "LOGITS", "CA_PROBS", "SP_PROBS"]
F16 = dict(rtol=2e-3, atol=2e-3)
"""Two float16 tensors of the same computation (batch composition changes float rounding)."""


@dataclass
class Served:
    settings: Settings
    report: object
    start_s: float
    rss_mb: float | None
    pss_mb: float

    def model(self, name: str) -> TritonModel:
        return TritonModel(self.settings, name)


def _pss_mb(pid: int) -> float:
    from deploy.local.process import descendants

    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from deploy.local import stack
    from training.serving.export import export_repository

    s = isolated_settings(tmp_path_factory, "itest-models")
    s.triton.request_timeout_s = 300.0  # Whisper on a shared 2-core box: several utterances queue
    s.triton.startup_timeout_s = 480.0
    s.models.asr_packing = True  # off by default (docs/benchmarks.md); its served path is tested here
    save_random_model(s.default_model_dir, SEED)
    report = export_repository(s)
    assert [m.status for m in report.models] == ["written"] * 5, report.table()
    try:
        t0 = time.monotonic()
        status = stack.up(s, components=["triton"], timeout_s=600)
        start_s = time.monotonic() - t0
        triton = status.components[0]
        assert triton.healthy, status.table()
        served = Served(s, report, start_s, triton.rss_mb, _pss_mb(triton.pid))
        print(
            f"\nTriton with 5 models: healthy in {start_s:.1f} s, RSS {triton.rss_mb:.0f} MB (PSS {served.pss_mb:.0f} MB)"
        )
        yield served
    finally:
        stack.down(s, components=["triton"])


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    from training.data.audio import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("espeak")
    waves = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"u{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        waves.append(load_audio(path, 16_000))
    return waves


@pytest.fixture(scope="module")
def local(served):
    """The in-process pipeline on the same bundle and trained model (one thread, like Triton)."""
    from training.checkpoint import load_model
    from training.encoders import SpeechEncoder, TextEncoder, Transcriber

    torch.set_num_threads(1)
    s = served.settings
    model, _ = load_model(s.default_model_dir)
    return {
        "asr": Transcriber.from_bundle(s, device="cpu", cpu_threads=1),
        "text": TextEncoder.from_bundle(s, device="cpu", threads=1),
        "speech": SpeechEncoder.from_bundle(s, device="cpu", threads=1),
        "model": model,
    }


def _word_spans(transcript: str, words) -> np.ndarray:
    from training.models import timed_word_spans

    return np.asarray(timed_word_spans(transcript, words), np.float64).reshape(-1, 4)


def _graph_inputs(text: dict, speech: dict, spans: list[np.ndarray]) -> dict[str, np.ndarray]:
    from shared.triton_models import pad_rows

    padded, counts = pad_rows([s if len(s) else np.zeros((1, 4)) for s in spans], np.float64)
    counts[[len(s) == 0 for s in spans]] = 0
    return {
        "TEXT": text["HIDDEN"],
        "TEXT_MASK": text["MASK"],
        "OFFSETS": text["OFFSETS"],
        "SPEECH": speech["FRAMES"],
        "SPEECH_MASK": speech["MASK"],
        "FRAME_TIMES": speech["FRAME_TIMES"],
        "WORD_SPANS": padded,
        "WORD_COUNT": counts,
    }


def _fusion_inputs(text: dict, speech: dict, graph: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "TEXT": text["HIDDEN"],
        "TEXT_MASK": text["MASK"],
        "SPEECH": speech["FRAMES"],
        "SPEECH_MASK": speech["MASK"],
        "GRAPH": graph,
    }


@pytest.fixture(scope="module")
def via_triton(served, utterances):
    """Each utterance alone (batch 1) through the five Triton models, in pipeline order."""
    from shared.alignment import words_from_json

    models = {n: served.model(n) for n in ("asr", "text_encoder", "speech_encoder", "graph_gat", "moe_fusion")}
    for m in models.values():
        m.wait_ready(60)
    results = []
    for wave in utterances:
        asr = models["asr"].infer({"AUDIO": wave[None]}, ASR_OUT)
        transcript, words = asr["TEXT"][0, 0].decode(), words_from_json(asr["WORDS"][0, 0])
        text = models["text_encoder"].infer({"TEXT": np.array([[transcript]], object)}, TEXT_OUT)
        speech = models["speech_encoder"].infer({"AUDIO": wave[None]}, SPEECH_OUT)
        spans = _word_spans(transcript, words)
        graph = models["graph_gat"].infer(_graph_inputs(text, speech, [spans]), GRAPH_OUT)
        fusion = models["moe_fusion"].infer(_fusion_inputs(text, speech, graph["GRAPH"]), FUSION_OUT)
        results.append(
            dict(
                asr=asr,
                transcript=transcript,
                words=words,
                spans=spans,
                text=text,
                speech=speech,
                graph=graph,
                fusion=fusion,
            )
        )
    return results


def _reference(model, text: dict, speech: dict, transcripts: list[str], words: list[list]) -> object:
    """The in-process trained model on features: ``model(collate(...))`` as training runs it."""
    from training.models import UtteranceFeatures, collate

    examples = [
        UtteranceFeatures(
            text_hidden=text["HIDDEN"][b],
            text_mask=text["MASK"][b],
            token_offsets=text["OFFSETS"][b],
            speech_frames=speech["FRAMES"][b],
            speech_mask=speech["MASK"][b],
            frame_times=speech["FRAME_TIMES"][b],
            transcript=transcripts[b],
            words=words[b],
        )
        for b in range(len(transcripts))
    ]
    batch = collate(examples, edge_rule=model.config.edge_rule)
    with torch.inference_mode():
        return model(batch), batch


@pytest.fixture(scope="module")
def in_process(local, utterances, via_triton, served):
    """The same pipeline in-process, utterance by utterance.

    BLAS and OpenMP are limited to one thread, as in Triton (``OMP_NUM_THREADS=1``): Whisper's word
    timestamps depend on it (faster-whisper's numpy feature extraction on multi-threaded OpenBLAS
    rounds differently, and the word alignment can move a boundary by a frame or more)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _in_process(local, utterances, served)


def _in_process(local, utterances, served):
    from training.models import UtteranceFeatures, collate

    results = []
    model = local["model"]
    for wave in utterances:
        tr = local["asr"].transcribe(wave)
        words = [{"text": w.text, "start": w.start, "end": w.end, "probability": w.probability} for w in tr.words]
        emb_t = local["text"].encode([tr.text])
        emb_s = local["speech"].encode([wave])
        text = {"HIDDEN": emb_t.hidden.astype(np.float16), "MASK": emb_t.mask, "OFFSETS": emb_t.offsets}
        speech = {"FRAMES": emb_s.frames.astype(np.float16), "MASK": emb_s.mask, "FRAME_TIMES": emb_s.frame_times}
        batch = collate(
            [
                UtteranceFeatures(
                    text_hidden=text["HIDDEN"][0],
                    text_mask=text["MASK"][0],
                    token_offsets=text["OFFSETS"][0],
                    speech_frames=speech["FRAMES"][0],
                    speech_mask=speech["MASK"][0],
                    frame_times=speech["FRAME_TIMES"][0],
                    transcript=tr.text,
                    words=words,
                )
            ],
            edge_rule=model.config.edge_rule,
        )
        with torch.inference_mode():
            graph = model.time_aligned_graph(batch)
            batch.graph = graph
            out = model(batch)
        results.append(
            dict(transcript=tr, words=words, text=text, speech=speech, probs=out.probs.numpy(), graph=graph.numpy())
        )
    return results


# ---- the comparisons ------------------------------------------------------------------------------------


def test_asr_words_equal_in_process(via_triton, in_process):
    for tri, loc in zip(via_triton, in_process, strict=True):
        tr = loc["transcript"]
        assert tri["transcript"] == tr.text and tri["transcript"]
        assert tri["asr"]["LANGUAGE"][0, 0].decode() == tr.language
        assert float(tri["asr"]["DURATION"][0, 0]) == pytest.approx(tr.duration, abs=1e-6)
        assert int(tri["asr"]["WINDOW"][0, 0]) == 1  # alone: a window of its own, as in-process
        assert [(w["text"], w["start"], w["end"]) for w in tri["words"]] == [(w.text, w.start, w.end) for w in tr.words]
        np.testing.assert_allclose(
            [w["probability"] for w in tri["words"]], [w.probability for w in tr.words], atol=1e-6
        )
        assert len(tri["words"]) >= 5


def test_encoders_match_in_process(via_triton, in_process):
    for tri, loc in zip(via_triton, in_process, strict=True):
        t, lt = tri["text"], loc["text"]
        assert t["HIDDEN"].dtype == np.float16 and t["HIDDEN"].shape == (1, 128, 384)
        np.testing.assert_array_equal(t["MASK"], lt["MASK"])
        np.testing.assert_array_equal(t["OFFSETS"], lt["OFFSETS"])
        np.testing.assert_allclose(t["HIDDEN"].astype(np.float32), lt["HIDDEN"].astype(np.float32), **F16)
        s, ls = tri["speech"], loc["speech"]
        assert s["FRAMES"].dtype == np.float16 and s["FRAMES"].shape == (1, 128, 512)
        np.testing.assert_array_equal(s["MASK"], ls["MASK"])
        np.testing.assert_allclose(s["FRAME_TIMES"], ls["FRAME_TIMES"], atol=1e-6)
        np.testing.assert_allclose(s["FRAMES"].astype(np.float32), ls["FRAMES"].astype(np.float32), **F16)


def test_graph_and_fusion_equal_the_in_process_model(via_triton, in_process, local):
    model = local["model"]
    for tri, loc in zip(via_triton, in_process, strict=True):
        # the same features in: Triton's graph embedding and probabilities are the model's
        ref, batch = _reference(model, tri["text"], tri["speech"], [tri["transcript"]], [tri["words"]])
        assert int(tri["graph"]["EDGES"][0, 0]) == int(batch.edge_counts[0]) > 0
        np.testing.assert_allclose(tri["graph"]["GRAPH"], ref.graph.numpy(), atol=1e-4, rtol=0)
        f = tri["fusion"]
        np.testing.assert_allclose(f["PROBS"], ref.probs.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(f["LOGITS"], ref.logits.numpy(), atol=1e-4, rtol=0)
        for name, branch in (("CA_PROBS", "ca_moe"), ("SP_PROBS", "sp_moe")):
            np.testing.assert_allclose(f[name], torch.softmax(ref.branch_logits[branch], -1).numpy(), atol=1e-4, rtol=0)
        # end to end against features computed in-process: equal up to the encoders' float16 rounding
        np.testing.assert_allclose(f["PROBS"], loc["probs"], atol=2e-3, rtol=0)
        np.testing.assert_allclose(tri["graph"]["GRAPH"], loc["graph"], atol=2e-2, rtol=0)


def _as_good_as_alone(text: str, words: list[dict], alone: dict, said: str, duration: float) -> None:
    """A packed utterance's transcript against the same utterance decoded alone: at most one word
    error more against what was said (the window's context often helps: "angry about this bill"
    heard alone as "I'm outless ill", packed as "about this meal"), and its words on the
    utterance's own clock."""
    from training.transcripts import edit_distance

    def norm(t: str) -> list[str]:
        return re.sub(r"[^a-z' ]+", " ", t.lower().replace("i'm", "i am")).split()

    def errors(heard: str) -> int:
        return edit_distance(norm(said), norm(heard))

    assert errors(text) <= errors(alone["transcript"]) + 1, (said, alone["transcript"], text)
    assert words and " ".join(w["text"] for w in words) == text
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(0.0 <= w["start"] <= w["end"] <= duration + 1e-6 for w in words)


def test_batched_and_concurrent_requests_give_the_same_results(served, utterances, via_triton):
    from shared.alignment import words_from_json
    from shared.triton_models import pad_rows

    n = len(utterances)
    audio, lengths = pad_rows(utterances)
    # one request with every utterance (padded audio + LENGTH)
    text = served.model("text_encoder").infer(
        {"TEXT": np.array([[r["transcript"]] for r in via_triton], object)}, TEXT_OUT
    )
    speech = served.model("speech_encoder").infer({"AUDIO": audio, "LENGTH": lengths}, SPEECH_OUT)
    graph = served.model("graph_gat").infer(_graph_inputs(text, speech, [r["spans"] for r in via_triton]), GRAPH_OUT)
    fusion = served.model("moe_fusion").infer(_fusion_inputs(text, speech, graph["GRAPH"]), FUSION_OUT)
    asr = served.model("asr").infer(
        {"AUDIO": audio, "LENGTH": lengths, "LANGUAGE": np.array([["en"]] + [[""]] * (n - 1), object)},
        ["TEXT", "WORDS", "WINDOW"],
    )
    # the rows of one request wait together: packed into one Whisper window, each gets its own words back
    assert asr["WINDOW"][:, 0].tolist() == [n] * n
    for b, one in enumerate(via_triton):
        duration = len(utterances[b]) / 16000
        _as_good_as_alone(asr["TEXT"][b, 0].decode(), words_from_json(asr["WORDS"][b, 0]), one, SENTENCES[b], duration)
        np.testing.assert_allclose(
            text["HIDDEN"][b].astype(np.float32), one["text"]["HIDDEN"][0].astype(np.float32), **F16
        )
        np.testing.assert_array_equal(text["OFFSETS"][b], one["text"]["OFFSETS"][0])
        np.testing.assert_allclose(
            speech["FRAMES"][b].astype(np.float32), one["speech"]["FRAMES"][0].astype(np.float32), **F16
        )
        np.testing.assert_array_equal(speech["MASK"][b], one["speech"]["MASK"][0])
        assert graph["EDGES"][b, 0] == one["graph"]["EDGES"][0, 0]
        np.testing.assert_allclose(graph["GRAPH"][b], one["graph"]["GRAPH"][0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(fusion["PROBS"][b], one["fusion"]["PROBS"][0], atol=1e-4, rtol=0)

    # concurrent single-utterance requests of different lengths: the dynamic batcher merges them
    # (AUDIO and WORD_SPANS allow ragged batches); every caller gets its own utterance's result
    def one_by_one(b: int):
        wave = utterances[b]
        s = served.model("speech_encoder").infer({"AUDIO": wave[None]}, SPEECH_OUT)
        a = served.model("asr").infer({"AUDIO": wave[None]}, ["TEXT", "WORDS", "WINDOW"])
        r = via_triton[b]
        g = served.model("graph_gat").infer(_graph_inputs(r["text"], r["speech"], [r["spans"]]), GRAPH_OUT)
        return s, a, g

    with ThreadPoolExecutor(n) as pool:
        concurrent = list(pool.map(one_by_one, range(n)))
    for b, ((s, a, g), one) in enumerate(zip(concurrent, via_triton, strict=True)):
        np.testing.assert_allclose(
            s["FRAMES"][0].astype(np.float32), one["speech"]["FRAMES"][0].astype(np.float32), **F16
        )
        assert 1 <= int(a["WINDOW"][0, 0]) <= n  # alone, or packed with those that queued beside it
        duration = len(utterances[b]) / 16000
        _as_good_as_alone(a["TEXT"][0, 0].decode(), words_from_json(a["WORDS"][0, 0]), one, SENTENCES[b], duration)
        np.testing.assert_allclose(g["GRAPH"], one["graph"]["GRAPH"], atol=1e-4, rtol=0)


def test_bad_request_fails_alone(served, via_triton):
    from shared.triton_client import TritonError

    good = via_triton[0]
    gat = served.model("graph_gat")
    bad = _graph_inputs(good["text"], good["speech"], [good["spans"]])
    bad["WORD_COUNT"] = np.array([[99]], np.int32)  # more words than WORD_SPANS rows
    with ThreadPoolExecutor(2) as pool:
        fut_bad = pool.submit(gat.infer, bad, GRAPH_OUT)
        fut_good = pool.submit(
            served.model("graph_gat").infer, _graph_inputs(good["text"], good["speech"], [good["spans"]]), GRAPH_OUT
        )
        with pytest.raises(TritonError, match="lengths"):
            fut_bad.result()
        np.testing.assert_allclose(fut_good.result()["GRAPH"], good["graph"]["GRAPH"], atol=1e-4, rtol=0)


def test_config_parameters_name_the_served_versions(served):
    from training.checkpoint import model_version
    from training.models import FusionConfig

    trained = model_version(served.settings.default_model_dir)
    for m in served.report.models:
        params = served.model(m.name).parameters()
        assert params["model_version"] == m.model_version and params["intra_op_threads"] == "1"
        assert params["models_dir"] == str(served.settings.models_dir)
    assert served.model("moe_fusion").parameters()["model_version"] == trained
    assert served.model("graph_gat").parameters()["model_version"] == trained
    assert served.model("moe_fusion").parameters()["class_names"].split(",") == list(FusionConfig().class_names)


def test_new_weights_become_version_2_and_rollback_serves_version_1(served, via_triton):
    """Last: it changes the trained model.  Re-export -> version 2 served after a reload; the
    encoders are unchanged; rollback -> version 1 (and its model_version) served again."""
    import tritonclient.grpc as grpcclient

    from training.checkpoint import load_model, model_version
    from training.serving.export import export_repository, load_into_triton, rollback

    s = served.settings
    old_version = model_version(s.default_model_dir)
    save_random_model(s.default_model_dir, SEED + 1)
    new_version = model_version(s.default_model_dir)
    report = export_repository(s)
    assert {m.name: m.status for m in report.models} == {
        "asr": "unchanged",
        "text_encoder": "unchanged",
        "speech_encoder": "unchanged",
        "graph_gat": "written",
        "moe_fusion": "written",
    }
    assert load_into_triton(s, report.changed) == ["graph_gat", "moe_fusion"]
    client = grpcclient.InferenceServerClient(s.triton.grpc_url)
    assert client.is_model_ready("moe_fusion", "2") and not client.is_model_ready("moe_fusion", "1")
    assert served.model("moe_fusion").parameters()["model_version"] == new_version != old_version

    one = via_triton[0]
    new_model, _ = load_model(s.default_model_dir)
    ref, _ = _reference(new_model, one["text"], one["speech"], [one["transcript"]], [one["words"]])
    graph = served.model("graph_gat").infer(_graph_inputs(one["text"], one["speech"], [one["spans"]]), GRAPH_OUT)[
        "GRAPH"
    ]
    np.testing.assert_allclose(graph, ref.graph.numpy(), atol=1e-4, rtol=0)
    probs = served.model("moe_fusion").infer(_fusion_inputs(one["text"], one["speech"], graph), ["PROBS"])["PROBS"]
    np.testing.assert_allclose(probs, ref.probs.numpy(), atol=1e-4, rtol=0)

    for name in ("graph_gat", "moe_fusion"):
        assert rollback(s, name).version == 1
    load_into_triton(s, ["graph_gat", "moe_fusion"])
    assert client.is_model_ready("moe_fusion", "1") and not client.is_model_ready("moe_fusion", "2")
    assert served.model("moe_fusion").parameters()["model_version"] == old_version
    probs = served.model("moe_fusion").infer(
        _fusion_inputs(one["text"], one["speech"], one["graph"]["GRAPH"]), ["PROBS"]
    )["PROBS"]
    np.testing.assert_allclose(probs, one["fusion"]["PROBS"], atol=1e-4, rtol=0)
    client.close()
