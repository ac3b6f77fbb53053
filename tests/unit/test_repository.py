"""The Triton model repository: rendered configs, versioned exports, rollback, and the serving
modules' batching logic (run in-process, no Triton needed)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from shared.settings import EMOTIONS, load_settings
from training.checkpoint import ModelMeta, load_model, model_version, save_model
from training.models import FusionConfig, UtteranceFeatures, build_model, collate
from training.models.profile import synthetic_utterances
from training.serving import export as export_mod
from training.serving.export import ExportError, export_repository, rollback
from training.serving.networks import has_network
from training.serving.repository import (
    asr_default_instances,
    asr_spec,
    graph_gat_spec,
    moe_fusion_spec,
    read_export,
    render_config,
    speech_encoder_spec,
    text_encoder_spec,
    versions,
)
from shared.triton_models import Tensor, TritonModelTensors, pad_rows
from training.serving.triton_base import TritonModelBase, ragged_rows

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


@pytest.fixture
def settings(tmp_path):
    s = load_settings(home=tmp_path / "home")
    s.models.max_tokens, s.models.max_frames = SMALL.max_tokens, SMALL.max_frames
    return s


def parse(text: str) -> model_config_pb2.ModelConfig:
    """config.pbtxt -> Triton's ModelConfig protobuf (fails on anything Triton would not parse)."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def io(tensors) -> dict[str, tuple[str, tuple[int, ...], bool, bool]]:
    return {
        t.name: (
            model_config_pb2.DataType.Name(t.data_type),
            tuple(t.dims),
            getattr(t, "optional", False),
            getattr(t, "allow_ragged_batch", False),
        )
        for t in tensors
    }


def save(directory, seed: int, name: str = "proposed", config: FusionConfig = SMALL):
    torch.manual_seed(seed)
    model = build_model(name, config).eval()
    save_model(directory, model, ModelMeta(name, config.to_dict(), list(config.class_names), seed=seed))
    return model


# ---- rendered configs -----------------------------------------------------------------------------


def test_every_model_renders_a_valid_config_with_its_contract(settings):
    s = settings
    specs = {
        "asr": asr_spec(s, "whisper-base@a"),
        "text_encoder": text_encoder_spec(s, "e5@b", 384),
        "speech_encoder": speech_encoder_spec(s, "enc@c", 512),
        "graph_gat": graph_gat_spec(s, "proposed@d", "/t/default", d_text=384, d_speech=512, d_graph=128),
        "moe_fusion": moe_fusion_spec(
            s, "proposed@d", "/t/default", d_text=384, d_speech=512, d_graph=128, class_names=EMOTIONS
        ),
    }
    configs = {name: parse(render_config(spec, s)) for name, spec in specs.items()}
    for name, c in configs.items():
        assert c.name == name and c.backend == "python"
        assert c.max_batch_size > 0 and c.version_policy.latest.num_versions == 1
        if name == "asr":  # one utterance per request, spread over one instance per core
            assert not c.HasField("dynamic_batching") and c.parameters["packing"].string_value == ""
            assert len(c.instance_group) == 1 and c.instance_group[0].count == asr_default_instances()
        else:
            assert c.dynamic_batching.max_queue_delay_microseconds == s.triton.max_queue_delay_us
            assert len(c.instance_group) == 1 and c.instance_group[0].count == 1
        assert c.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO  # no forced kind
        params = {k: v.string_value for k, v in c.parameters.items()}
        assert params["models_dir"] == str(s.models_dir) and params["intra_op_threads"] == "1"
        assert params["model_version"] == specs[name].model_version
    t, f = s.models.max_tokens, s.models.max_frames
    assert io(configs["asr"].input) == {
        "AUDIO": ("TYPE_FP32", (-1,), False, True),
        "LENGTH": ("TYPE_INT32", (1,), True, False),
        "LANGUAGE": ("TYPE_STRING", (1,), True, False),
    }
    assert io(configs["asr"].output) == {
        n: (d, (1,), False, False)
        for n, d in [
            ("TEXT", "TYPE_STRING"),
            ("LANGUAGE", "TYPE_STRING"),
            ("WORDS", "TYPE_STRING"),
            ("DURATION", "TYPE_FP32"),
            ("WINDOW", "TYPE_INT32"),
        ]
    }
    assert io(configs["text_encoder"].output) == {
        "HIDDEN": ("TYPE_FP16", (t, 384), False, False),
        "MASK": ("TYPE_BOOL", (t,), False, False),
        "OFFSETS": ("TYPE_INT32", (t, 2), False, False),
    }
    assert io(configs["speech_encoder"].input)["AUDIO"] == ("TYPE_FP32", (-1,), False, True)
    assert io(configs["speech_encoder"].output) == {
        "FRAMES": ("TYPE_FP16", (f, 512), False, False),
        "MASK": ("TYPE_BOOL", (f,), False, False),
        "FRAME_TIMES": ("TYPE_FP32", (f, 2), False, False),
        "DURATION": ("TYPE_FP32", (1,), False, False),
    }
    gat_in = io(configs["graph_gat"].input)
    baseline = ["SPEAKER_MEAN", "SPEAKER_VAR", "SPEAKER_COUNT"]
    assert list(gat_in) == [
        "TEXT",
        "TEXT_MASK",
        "OFFSETS",
        "SPEECH",
        "SPEECH_MASK",
        "FRAME_TIMES",
        "WORD_SPANS",
        "WORD_COUNT",
        *baseline,
    ]
    assert gat_in["SPEAKER_MEAN"] == ("TYPE_FP32", (512,), True, False) and gat_in["SPEAKER_COUNT"] == (
        "TYPE_FP32",
        (1,),
        True,
        False,
    )
    assert gat_in["TEXT"] == ("TYPE_FP16", (t, 384), False, False) and gat_in["SPEECH"] == (
        "TYPE_FP16",
        (f, 512),
        False,
        False,
    )
    assert gat_in["WORD_SPANS"] == ("TYPE_FP64", (-1, 4), False, True) and gat_in["WORD_COUNT"] == (
        "TYPE_INT32",
        (1,),
        True,
        False,
    )
    assert io(configs["graph_gat"].output) == {
        "GRAPH": ("TYPE_FP32", (128,), False, False),
        "EDGES": ("TYPE_INT32", (1,), False, False),
    }
    assert list(io(configs["moe_fusion"].input)) == ["TEXT", "TEXT_MASK", "SPEECH", "SPEECH_MASK", "GRAPH", *baseline]
    assert io(configs["moe_fusion"].input)["SPEAKER_VAR"] == ("TYPE_FP32", (512,), True, False)
    assert io(configs["moe_fusion"].output) == {
        n: ("TYPE_FP32", (7,), False, False) for n in ("PROBS", "LOGITS", "CA_PROBS", "SP_PROBS")
    }
    fusion_params = {k: v.string_value for k, v in configs["moe_fusion"].parameters.items()}
    assert (
        fusion_params["class_names"].split(",") == list(EMOTIONS) and fusion_params["trained_model_dir"] == "/t/default"
    )


def test_instance_kind_and_batching_follow_the_settings(settings):
    settings.triton.instance_kind = "cpu"
    settings.triton.max_batch_size, settings.triton.max_queue_delay_us, settings.triton.instances_per_model = 16, 500, 2
    c = parse(render_config(text_encoder_spec(settings, "v", 8), settings))
    assert c.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and c.instance_group[0].count == 2
    assert c.max_batch_size == 16 and c.dynamic_batching.max_queue_delay_microseconds == 500
    assert parse(render_config(asr_spec(settings, "v"), settings)).max_batch_size == 8  # one by one: small batches
    settings.models.asr_packing = True  # each instance takes up to a window's worth of the queue
    packed = parse(render_config(asr_spec(settings, "v"), settings))
    assert packed.max_batch_size == settings.models.asr_pack_batch == 4
    assert packed.dynamic_batching.max_queue_delay_microseconds == 0
    settings.models.asr_pack_batch = 32  # never above the Triton-wide limit
    assert parse(render_config(asr_spec(settings, "v"), settings)).max_batch_size == 16
    assert packed.parameters["packing"].string_value == "1"
    assert float(packed.parameters["pack_window_s"].string_value) == settings.models.asr_pack_window_s
    settings.triton.asr_instances = 3
    assert parse(render_config(asr_spec(settings, "v"), settings)).instance_group[0].count == 3
    settings.triton.instance_kind = "gpu"
    assert "KIND_GPU" in render_config(text_encoder_spec(settings, "v", 8), settings)


def test_parameter_values_are_quoted(settings):
    spec = moe_fusion_spec(settings, 'odd "name"\\', "/t", d_text=4, d_speech=4, d_graph=4, class_names=["a", "b"])
    assert parse(render_config(spec, settings)).parameters["model_version"].string_value == 'odd "name"\\'


# ---- versioned exports ----------------------------------------------------------------------------


TRAINED = ["graph_gat", "moe_fusion"]


def test_export_versions_trained_models(settings, tmp_path):
    model_dir = tmp_path / "trained"
    save(model_dir, seed=0)
    repo = settings.model_repository
    first = export_repository(settings, model_dir, models=TRAINED)
    assert [(m.status, m.version) for m in first.models] == [("written", 1), ("written", 1)]
    v1 = model_version(model_dir)
    for name in TRAINED:
        folder = repo / name / "1"
        assert (
            (folder / "model.py")
            .read_text()
            .endswith(f"from training.serving.{name} import TritonPythonModel  # noqa: E402, F401\n")
        )
        assert (folder / "trained" / "model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()
        info = read_export(folder)
        assert (
            info["model_version"] == v1
            and info["version"] == 1
            and info["config"] == (repo / name / "config.pbtxt").read_text()
        )
        assert parse(info["config"]).parameters["model_version"].string_value == v1
    stamps = {p: p.stat().st_mtime_ns for p in repo.rglob("*") if p.is_file()}

    second = export_repository(settings, model_dir, models=TRAINED)
    assert [(m.status, m.version) for m in second.models] == [("unchanged", 1), ("unchanged", 1)] and not second.changed
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*") if p.is_file()} == stamps  # nothing rewritten

    save(model_dir, seed=1)
    v2 = model_version(model_dir)
    third = export_repository(settings, model_dir, models=TRAINED)
    assert v2 != v1 and [(m.status, m.version, m.model_version) for m in third.models] == [("written", 2, v2)] * 2
    assert third.changed == TRAINED
    for name in TRAINED:
        assert versions(repo / name) == [1, 2]
        assert read_export(repo / name / "1")["model_version"] == v1  # version 1 kept as it was
        assert (repo / name / "1" / "trained" / "model.pt").stat().st_mtime_ns == stamps[
            repo / name / "1" / "trained" / "model.pt"
        ]
        assert parse((repo / name / "config.pbtxt").read_text()).parameters["model_version"].string_value == v2

    # a settings change re-renders the config, without a new version
    settings.triton.max_queue_delay_us = 777
    fourth = export_repository(settings, model_dir, models=["moe_fusion"])
    assert (fourth["moe_fusion"].status, fourth["moe_fusion"].version) == ("config", 2)
    assert "max_queue_delay_microseconds: 777" in (repo / "moe_fusion" / "config.pbtxt").read_text()
    assert versions(repo / "moe_fusion") == [1, 2]

    # rollback: the newest folder goes, the previous config (and model_version) comes back
    back = rollback(settings, "moe_fusion")
    assert (back.status, back.version, back.model_version) == ("rolled back", 1, v1)
    assert versions(repo / "moe_fusion") == [1]
    assert parse((repo / "moe_fusion" / "config.pbtxt").read_text()).parameters["model_version"].string_value == v1
    with pytest.raises(ExportError, match="nothing to roll back"):
        rollback(settings, "moe_fusion")


SERVE_WITHOUT_THE_PROJECT = """
import importlib.util, json, sys
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

root, version = Path(sys.argv[1]), sys.argv[2]
folder = root / version
spec = importlib.util.spec_from_file_location("model", folder / "model.py")
model_py = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_py)
config = text_format.Parse((root / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
served = model_py.TritonPythonModel()
served.initialize({
    "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
    "model_instance_kind": "CPU", "model_repository": str(root), "model_version": version,
})
project = sorted({m.__file__ for m in list(sys.modules.values())
                  if m.__name__.partition(".")[0] in ("shared", "training") and getattr(m, "__file__", None)})
print(json.dumps({"version": served.model_version, "project_files": project,
                  "torch": "torch" in sys.modules, "torch_geometric": "torch_geometric" in sys.modules}))
"""


def test_a_version_folder_serves_without_the_project(settings, tmp_path):
    """Triton needs only the exported folder and the Python packages: the model's own modules and
    the ones they import come from the copy in the version folder, and it loads its weights."""
    import subprocess
    import sys
    import sysconfig

    model_dir = tmp_path / "trained"
    save(model_dir, seed=0)
    export_repository(settings, model_dir, models=TRAINED)
    packages = sysconfig.get_paths()["purelib"]  # third-party only: -S skips the project's editable install
    for name in TRAINED:
        root = settings.model_repository / name
        run = subprocess.run(
            [sys.executable, "-S", "-c", f"import sys; sys.path.append({packages!r})\n" + SERVE_WITHOUT_THE_PROJECT]
            + [str(root), "1"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "EMOTION_HOME": str(settings.home)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        served = json.loads(run.stdout.strip().splitlines()[-1])
        assert served["version"] == model_version(model_dir)
        code = root / "1" / "python"
        assert served["project_files"] and all(f.startswith(str(code)) for f in served["project_files"]), served
        assert f"{code}/training/serving/{name}.py" in served["project_files"]
        # a CPU instance runs the version folder's network on ONNX Runtime: no torch (~0.5 GB), no
        # torch-geometric (~0.2 GB)
        assert (root / "1" / "network" / "network.onnx").is_file()
        assert not served["torch"] and not served["torch_geometric"], served


def test_the_fusion_server_loads_its_model_without_the_gat(tmp_path):
    torch.manual_seed(5)
    model = build_model("proposed", SMALL).eval()
    save_model(tmp_path / "m", model, ModelMeta("proposed", SMALL.to_dict(), list(SMALL.class_names), seed=5))
    lean, _ = load_model(tmp_path / "m", with_gat=False)
    assert len(lean.gat.convs) == 0 and not any(k.startswith("gat.convs.") for k in lean.state_dict())
    batch = collate(_features(3))
    with torch.inference_mode():
        given = dataclasses.replace(batch, graph=batch.graph_embedding(model.gat))
        torch.testing.assert_close(lean(given).probs, model(given).probs)
        with pytest.raises(RuntimeError, match="built without its layers"):
            lean(batch)  # no graph embedding: refused, never a GAT without message passing


def test_model_code_follows_relative_and_function_local_imports(tmp_path, monkeypatch):
    from training.serving import repository

    (tmp_path / "training" / "serving").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    files = {
        "training/__init__.py": "",
        "training/serving/__init__.py": "from . import base\n",
        "training/serving/base.py": "import json\n",
        "training/serving/model.py": "from .helper import f\n\ndef load():\n    from shared import lazy\n",
        "training/serving/helper.py": "from training import serving\n",
        "training/unused.py": "",
        "shared/__init__.py": "",
        "shared/lazy.py": "import numpy\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(repository, "PROJECT_ROOT", tmp_path)
    assert sorted(repository.model_code("training.serving.model")) == sorted(set(files) - {"training/unused.py"})
    with pytest.raises(ValueError, match="training.missing is not a module"):
        repository.model_code("training.missing")


def test_missing_trained_model_is_skipped_by_default_and_fails_when_named(settings, tmp_path, caplog):
    caplog.set_level("INFO")
    report = export_repository(settings, models=TRAINED)  # <home>/trained/default does not exist yet
    assert [m.status for m in report.models] == ["skipped", "skipped"] and not report.failed
    assert "no trained model" in caplog.text and "skipped" in caplog.text
    assert not (settings.model_repository / "graph_gat").exists()
    named = export_repository(settings, tmp_path / "nowhere", models=TRAINED)
    assert named.failed == TRAINED


def test_model_without_gat_exports_fusion_only(settings, tmp_path):
    save(tmp_path / "bilstm", seed=0, name="bilstm_text")
    report = export_repository(settings, tmp_path / "bilstm", models=TRAINED)
    assert report["graph_gat"].status == "skipped" and "no time-aligned GAT" in report["graph_gat"].note
    assert report["moe_fusion"].status == "written"
    # its packed sequences do not export to ONNX: no network, so its CPU instances run on torch
    assert not has_network(settings.model_repository / "moe_fusion" / "1")


def test_encoders_are_versioned_by_their_bundle_version(settings, tmp_path, monkeypatch):
    """The bundle is faked: a folder with config.json per role and a version string."""
    import training.model_store

    bundle = {"asr": "whisper-base@1", "text_encoder": "e5@1", "speech_encoder": "enc@1"}
    configs = {
        "asr": {},
        "text_encoder": {"hidden_size": 24},
        "speech_encoder": {"model_type": "whisper", "d_model": 20},
    }

    def fake_resolve(s, role):
        path = tmp_path / "bundle" / role
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(configs[role]))
        return types.SimpleNamespace(name=role.replace("_", "-"), version=bundle[role], path=path)

    monkeypatch.setattr(training.model_store, "resolve", fake_resolve)
    networks: list[str] = []  # the fake bundle has no weights to export for ONNX Runtime
    monkeypatch.setattr(export_mod, "export_network", lambda s, name: networks.append(name))
    report = export_repository(settings)  # no trained model yet: the encoders only
    assert networks == ["text_encoder", "speech_encoder"]
    assert [(m.name, m.status, m.version) for m in report.models] == [
        ("asr", "written", 1),
        ("text_encoder", "written", 1),
        ("speech_encoder", "written", 1),
        ("graph_gat", "skipped", None),
        ("moe_fusion", "skipped", None),
    ]
    hidden = parse((settings.model_repository / "text_encoder" / "config.pbtxt").read_text()).output[0]
    assert hidden.name == "HIDDEN" and list(hidden.dims) == [settings.models.max_tokens, 24]
    frames = parse((settings.model_repository / "speech_encoder" / "config.pbtxt").read_text()).output[0]
    assert list(frames.dims) == [settings.models.max_frames, 20]
    bundle["text_encoder"] = "e5@2"
    again = export_repository(settings, models=["asr", "text_encoder", "speech_encoder"])
    assert [(m.status, m.version) for m in again.models] == [("unchanged", 1), ("written", 2), ("unchanged", 1)]

    # a trained model read layer 3 of the speech encoder: the served speech encoder follows it,
    # whatever models.speech_layer says, and names the layer in its version
    config = dataclasses.replace(SMALL, d_speech=20, d_text=24)
    model = build_model("proposed", config).eval()
    meta = ModelMeta(
        "proposed",
        config.to_dict(),
        list(config.class_names),
        seed=0,
        encoders={"speech_encoder": "enc@1#layer3", "text_encoder": "e5@2"},
    )
    save_model(settings.default_model_dir, model, meta)
    third = export_repository(settings, models=["speech_encoder"])
    assert [(m.status, m.version) for m in third.models] == [("written", 2)]
    served = parse((settings.model_repository / "speech_encoder" / "config.pbtxt").read_text())
    params = {k: v.string_value for k, v in served.parameters.items()}
    assert params["speech_layer"] == "3" and params["model_version"] == "enc@1#layer3"
    assert params["speech_level_dbfs"] == ""  # trained on unlevelled audio: served so, whatever the settings say


def test_an_old_unversioned_export_is_superseded(settings, tmp_path):
    """A folder as an older exporter wrote it (config and version 1, no export.json) gets a proper version 2."""
    from training.serving.repository import model_py, render_config

    save(tmp_path / "m", seed=0)
    spec = moe_fusion_spec(settings, "old", "/x", d_text=1, d_speech=1, d_graph=1, class_names=["a"])
    root = settings.model_repository / spec.name
    (root / "1").mkdir(parents=True)
    (root / "config.pbtxt").write_text(render_config(spec, settings))
    (root / "1" / "model.py").write_text(model_py(spec))
    report = export_repository(settings, tmp_path / "m", models=["moe_fusion"])
    assert (report["moe_fusion"].status, report["moe_fusion"].version) == ("written", 2)


def test_cli_main_prints_the_table(settings, tmp_path, capsys):
    save(tmp_path / "m", seed=0)
    parser = argparse.ArgumentParser()
    export_mod.add_arguments(parser)
    args = parser.parse_args(
        ["--model", str(tmp_path / "m"), "--repository", str(tmp_path / "repo"), "--only", *TRAINED]
    )
    assert export_mod.main(args, settings) == 0
    out = capsys.readouterr().out
    assert "graph_gat" in out and "written" in out and str(tmp_path / "repo") in out
    assert (
        export_mod.main(
            parser.parse_args(
                [*map(str, ["--model", tmp_path / "m", "--repository", tmp_path / "repo"]), "--only", "moe_fusion"]
            ),
            settings,
        )
        == 0
    )
    assert "unchanged" in capsys.readouterr().out
    assert (
        export_mod.main(
            parser.parse_args(["--repository", str(tmp_path / "repo"), "--rollback", "moe_fusion"]), settings
        )
        == 1
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--only", "nope"])


# ---- the serving modules' logic, in-process ---------------------------------------------------------


def test_ragged_helpers_round_trip():
    rows = [np.arange(5, dtype=np.float32), np.arange(2, dtype=np.float32), np.zeros(0, np.float32)]
    padded, lengths = pad_rows(rows)
    assert padded.shape == (3, 5) and lengths.tolist() == [[5], [2], [0]]
    for a, b in zip(ragged_rows(padded, lengths), rows, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [len(r) for r in ragged_rows(padded, None)] == [5, 5, 5]
    spans, counts = pad_rows([np.ones((2, 4)), np.ones((1, 4))], np.float64)
    assert spans.shape == (2, 2, 4) and spans[1, 1].sum() == 0 and counts.ravel().tolist() == [2, 1]
    with pytest.raises(ValueError, match="lengths"):
        ragged_rows(padded, np.array([[6], [1], [1]]))


class _DoublerTensors(TritonModelTensors):
    model = "doubler"
    inputs = (Tensor("X", "FP32", (1,)),)
    outputs = (Tensor("Y", "FP32", (1,)),)


class _Doubler(TritonModelBase):
    tensors = _DoublerTensors

    def run(self, batch):
        if (batch["X"] < 0).any():
            raise ValueError("negative input")
        return {"Y": batch["X"] * 2}


def test_a_failing_request_fails_alone():
    model = _Doubler()
    model.name = "doubler"
    items = [{"X": np.array([[1.0], [2.0]])}, {"X": np.array([[-1.0]])}, {"X": np.array([[3.0]])}]
    out = model._infer_isolated(items)
    np.testing.assert_array_equal(out[0]["Y"], [[2.0], [4.0]])
    assert isinstance(out[1], ValueError)
    np.testing.assert_array_equal(out[2]["Y"], [[6.0]])


def _features(n: int, seed: int = 0) -> list[UtteranceFeatures]:
    examples = synthetic_utterances(
        n,
        d_text=SMALL.d_text,
        d_speech=SMALL.d_speech,
        max_tokens=SMALL.max_tokens,
        max_frames=SMALL.max_frames,
        duration=(0.3, 1.5),
        seed=seed,
    )
    for e in examples:  # as the encoders' Triton outputs: float16 features
        e.text_hidden, e.speech_frames = e.text_hidden.astype(np.float16), e.speech_frames.astype(np.float16)
    return examples


def _serving_model(module, model, model_dir: Path | None = None):
    """A CPU instance of ``module`` serving ``model``: on torch, or with ``model_dir`` (where the
    model is saved) on ONNX Runtime, its network exported into a version folder as `emotion export` does."""
    from training.serving.networks import NETWORK_DIR, export_trained_network, has_network, load_network

    served = module.TritonPythonModel()
    served.name, served.device, served.threads = module.__name__.rpartition(".")[2], "cpu", 1
    served.version_dir = None
    if model_dir is not None:
        served.version_dir = model_dir.parent / f"{served.name}-version"
        export_trained_network(served.name, model_dir, served.version_dir / NETWORK_DIR)
        assert has_network(served.version_dir)
        served.network = load_network(served.version_dir, served.name, 1)
    assert served.uses_torch() == (model_dir is None)
    served.model, served.config = model, model.config
    return served


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize(
    "speaker_norm,branches",
    [(False, ("ca", "sp")), (True, ("ca", "sp")), (True, ("ca", "sp", "vs"))],
    ids=["paper", "speaker-norm", "speaker-norm+voice-stats"],
)
def test_graph_gat_and_moe_fusion_compute_what_the_model_computes(
    tmp_path, speaker_norm: bool, branches: tuple[str, ...], runtime: str
):
    from training.models.graph import timed_word_spans
    from training.serving import graph_gat, moe_fusion

    config = dataclasses.replace(SMALL, speaker_norm=speaker_norm, branches=branches)
    torch.manual_seed(3)
    model = build_model("proposed", config).eval()
    examples = _features(4)
    if speaker_norm:  # a prior and baselines that change the frames: utterances 1 and 3 have earlier ones
        model.speaker_norm.fit_prior(
            torch.linspace(-0.5, 0.5, SMALL.d_speech), torch.linspace(0.5, 2.0, SMALL.d_speech)
        )
        rng = np.random.default_rng(1)
        for e, n in zip(examples, (0, 2, 0, 5), strict=True):
            e.speaker_count = float(n)
            e.speaker_mean, e.speaker_var = (
                (rng.normal(size=SMALL.d_speech), rng.uniform(0.2, 3, SMALL.d_speech)) if n else (None, None)
            )
    if "vs" in branches:  # a fitted standardisation travels with the weights
        assert model.fit_voice_scaler([collate(examples)]) == len(examples)
    save_model(tmp_path / "m", model, ModelMeta("proposed", config.to_dict(), list(config.class_names), seed=3))
    with torch.inference_mode():
        ref = model(collate(examples))
    spans = [np.asarray(timed_word_spans(e.transcript, e.words), np.float64).reshape(-1, 4) for e in examples]

    def stack(name, b):
        return np.stack([np.asarray(getattr(e, name)) for e in examples[b]])

    def baseline(b: slice) -> dict:
        if not speaker_norm:
            return {}
        rows = examples[b]
        vec = lambda name: np.stack(
            [
                np.zeros(SMALL.d_speech) if getattr(e, name) is None else getattr(e, name)  # noqa: E731
                for e in rows
            ]
        ).astype(np.float32)
        return {
            "SPEAKER_COUNT": np.array([[e.speaker_count] for e in rows], np.float32),
            "SPEAKER_MEAN": vec("speaker_mean"),
            "SPEAKER_VAR": vec("speaker_var"),
        }

    def gat_item(b: slice) -> dict:
        padded, counts = pad_rows(spans[b], np.float64)
        return {
            "TEXT": stack("text_hidden", b),
            "TEXT_MASK": stack("text_mask", b),
            "OFFSETS": stack("token_offsets", b),
            "SPEECH": stack("speech_frames", b),
            "SPEECH_MASK": stack("speech_mask", b),
            "FRAME_TIMES": stack("frame_times", b),
            "WORD_SPANS": padded,
            "WORD_COUNT": counts,
            **baseline(b),
        }

    # one dynamic batch of two requests (3 utterances + 1 utterance, different word counts)
    saved = tmp_path / "m" if runtime == "onnx" else None
    gat = _serving_model(graph_gat, model, saved)
    out = gat.infer([gat_item(slice(0, 3)), gat_item(slice(3, 4))])
    graph = np.concatenate([o["GRAPH"] for o in out])
    np.testing.assert_allclose(graph, ref.graph.numpy(), atol=1e-5, rtol=0)
    assert np.concatenate([o["EDGES"] for o in out]).ravel().tolist() == collate(examples).edge_counts.tolist()

    fusion = _serving_model(moe_fusion, model, saved)
    all_ = slice(0, 4)
    res = fusion.infer(
        [
            {
                "TEXT": stack("text_hidden", all_),
                "TEXT_MASK": stack("text_mask", all_),
                "SPEECH": stack("speech_frames", all_),
                "SPEECH_MASK": stack("speech_mask", all_),
                "GRAPH": graph,
                **baseline(all_),
            }
        ]
    )[0]
    np.testing.assert_allclose(res["PROBS"], ref.probs.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(res["LOGITS"], ref.logits.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        res["CA_PROBS"], torch.softmax(ref.branch_logits["ca_moe"], -1).numpy(), atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        res["SP_PROBS"], torch.softmax(ref.branch_logits["sp_moe"], -1).numpy(), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_single_branch_model_gives_zero_probabilities_for_the_missing_branch(tmp_path, runtime: str):
    from training.serving import moe_fusion

    model = save(tmp_path / "m", seed=0, name="ca_moe")
    examples = _features(2)
    fusion = _serving_model(moe_fusion, model, tmp_path / "m" if runtime == "onnx" else None)
    batch = collate(examples)
    res = fusion.run(
        {
            "TEXT": batch.text.numpy().astype(np.float16),
            "TEXT_MASK": batch.text_mask.numpy(),
            "SPEECH": batch.speech.numpy().astype(np.float16),
            "SPEECH_MASK": batch.speech_mask.numpy(),
            "GRAPH": np.zeros((2, SMALL.d_graph), np.float32),
        }
    )
    assert (res["SP_PROBS"] == 0).all() and np.allclose(res["CA_PROBS"].sum(-1), 1)
