"""The Triton model repository: the tensor contract of every served model, and the one place that
renders ``config.pbtxt``.

Layout, one folder per model::

    <repository>/<model>/config.pbtxt
    <repository>/<model>/<version>/model.py      # puts python/ first on sys.path, imports TritonPythonModel
    <repository>/<model>/<version>/python/       # the project's modules that model imports (model_code)
    <repository>/<model>/<version>/export.json   # what this version serves (written by emotion export)
    <repository>/<model>/<version>/trained/      # graph_gat, moe_fusion: a copy of the trained weights

No ``instance_group`` kind is written unless settings force one: Triton then places one instance
per GPU where GPUs exist and a CPU instance elsewhere, so the same repository serves both.
``version_policy`` is ``latest { num_versions: 1 }``: Triton serves the newest version folder, so
a new export is picked up by a reload and a rollback is removing the newest folder (see
:mod:`training.serving.export`).

A version folder is self-contained: Triton serves it with the documented Python packages installed
and none of the project's code (the Triton image holds no checkout).  Each version also pins the
code it was exported with, so a rollback brings back that code with its weights.

The tensors of each model (names, data types, shapes) are declared in :mod:`shared.triton_models`;
a spec here sizes them (``T``, ``F``, the widths, the classes) and adds the model's parameters.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import PROJECT_ROOT, Settings
from shared.triton_models import (
    AsrTensors,
    GraphGatTensors,
    MoeFusionTensors,
    SpeechEncoderTensors,
    Tensor,
    TextEncoderTensors,
)

log = logging.getLogger(__name__)

EXPORT_FILE = "export.json"
"""Per version folder: the model version it serves, its fingerprint and its rendered config."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: str
    """Python module that defines ``TritonPythonModel``."""
    tensors: tuple[tuple[Tensor, ...], tuple[Tensor, ...]]
    """Inputs and outputs, sized (:meth:`shared.triton_models.TritonModelTensors.sized`)."""
    parameters: dict[str, str] = field(default_factory=dict)
    max_batch_size: int | None = None
    """None: ``settings.triton.max_batch_size``."""
    num_versions: int = 1
    """``version_policy: { latest { num_versions } }``: how many of the newest versions Triton serves."""
    dynamic_batching: bool = True
    """Whether Triton's dynamic batcher merges concurrent requests into one execution."""
    max_queue_delay_us: int | None = None
    """How long the dynamic batcher waits for more requests; None: ``settings.triton.max_queue_delay_us``."""
    instances: int | None = None
    """Instances of the model; None: ``settings.triton.instances_per_model``."""

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        return self.tensors[0]

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        return self.tensors[1]

    @property
    def model_version(self) -> str:
        return self.parameters.get("model_version", "")


# ---- the five models -----------------------------------------------------------------------------


def asr_spec(settings: Settings, model_version: str, model_name: str | None = None, beam_size: int = 1) -> ModelSpec:
    """Whisper (faster-whisper) with word timestamps; one utterance per row, packed into shared
    windows when ``models.asr_packing`` is on."""
    m = settings.models
    return ModelSpec(
        name="asr",
        module="training.serving.asr",
        tensors=AsrTensors.sized(),
        parameters={
            "model_version": model_version,
            "model_name": model_name or settings.models.asr,
            "beam_size": str(beam_size),
            "language": settings.models.language or "",
            "window_s": f"{m.asr_window_s:g}",
            "packing": "1" if m.asr_packing else "",
            "pack_window_s": f"{m.asr_pack_window_s:g}",
            "pack_gap_s": f"{m.asr_pack_gap_s:g}",
        },
        max_batch_size=min(m.asr_pack_batch if m.asr_packing else 8, settings.triton.max_batch_size),
        # One instance per core, each taking the next request (the ASR service sends one per
        # utterance). Packing: the dynamic batcher hands a free instance the requests queued
        # while it was busy, up to about a window's worth (asr_pack_batch), never waiting for
        # more (delay 0), and the instance packs them into shared Whisper windows. Without packing the rows of a batch would be decoded one after
        # another on one instance while another idles: no dynamic batching.
        dynamic_batching=m.asr_packing,
        max_queue_delay_us=0,
        instances=settings.triton.asr_instances or asr_default_instances(),
    )


def asr_default_instances() -> int:
    """One ``asr`` instance per CPU core this process may use, at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def text_encoder_spec(settings: Settings, model_version: str, dim: int, model_name: str | None = None) -> ModelSpec:
    t = settings.models.max_tokens
    return ModelSpec(
        name="text_encoder",
        module="training.serving.text_encoder",
        tensors=TextEncoderTensors.sized(T=t, Dt=dim),
        parameters={"model_version": model_version, "model_name": model_name or settings.models.text_encoder},
    )


def speech_encoder_spec(settings: Settings, model_version: str, dim: int, model_name: str | None = None) -> ModelSpec:
    f = settings.models.max_frames
    return ModelSpec(
        name="speech_encoder",
        module="training.serving.speech_encoder",
        tensors=SpeechEncoderTensors.sized(F=f, Ds=dim),
        parameters={
            "model_version": model_version,
            "model_name": model_name or settings.models.speech_encoder,
            "speech_layer": "" if settings.models.speech_layer is None else str(settings.models.speech_layer),
            "speech_level_dbfs": ""
            if settings.models.speech_level_dbfs is None
            else f"{settings.models.speech_level_dbfs:g}",
            "speech_prosody": "1" if settings.models.speech_prosody else "",
        },
    )


def _trained_parameters(
    model_version: str, trained_model_dir: Path | str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {"model_version": model_version, "trained_model_dir": str(trained_model_dir), **(extra or {})}


def graph_gat_spec(
    settings: Settings,
    model_version: str,
    trained_model_dir: Path | str,
    *,
    d_text: int,
    d_speech: int,
    d_graph: int,
    edge_rule: str = "center",
) -> ModelSpec:
    """The trained model's time-aligned GAT: encoder features + word spans -> graph embedding."""
    t, f = settings.models.max_tokens, settings.models.max_frames
    return ModelSpec(
        name="graph_gat",
        module="training.serving.graph_gat",
        tensors=GraphGatTensors.sized(T=t, F=f, Dt=d_text, Ds=d_speech, Dg=d_graph),
        parameters=_trained_parameters(model_version, trained_model_dir, {"edge_rule": edge_rule}),
    )


def moe_fusion_spec(
    settings: Settings,
    model_version: str,
    trained_model_dir: Path | str,
    *,
    d_text: int,
    d_speech: int,
    d_graph: int,
    class_names: tuple[str, ...] | list[str],
    branches: tuple[str, ...] | list[str] = ("ca_moe", "sp_moe"),
) -> ModelSpec:
    """The trained model after its GAT (CA-MoE + SP-MoE + class-wise late fusion) on a given graph embedding."""
    t, f, c = settings.models.max_tokens, settings.models.max_frames, len(class_names)
    return ModelSpec(
        name="moe_fusion",
        module="training.serving.moe_fusion",
        tensors=MoeFusionTensors.sized(T=t, F=f, Dt=d_text, Ds=d_speech, Dg=d_graph, C=c),
        parameters=_trained_parameters(
            model_version, trained_model_dir, {"class_names": ",".join(class_names), "branches": ",".join(branches)}
        ),
    )


# ---- rendering -----------------------------------------------------------------------------------


def _tensor_line(t: Tensor) -> str:
    extra = (" optional: true" if t.optional else "") + (" allow_ragged_batch: true" if t.ragged else "")
    return f'  {{ name: "{t.name}" data_type: TYPE_{t.dtype} dims: [ {", ".join(map(str, t.dims))} ]{extra} }}'


def _tensor_block(kind: str, tensors: tuple[Tensor, ...]) -> str:
    return f"{kind} [\n" + ",\n".join(_tensor_line(t) for t in tensors) + "\n]"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def render_config(spec: ModelSpec, settings: Settings) -> str:
    tr = settings.triton
    params = {
        "models_dir": str(settings.models_dir),
        "intra_op_threads": str(tr.intra_op_threads),
        **spec.parameters,
    }
    kind = {"cpu": " kind: KIND_CPU", "gpu": " kind: KIND_GPU"}.get(tr.instance_kind, "")
    max_batch = tr.max_batch_size if spec.max_batch_size is None else spec.max_batch_size
    delay = tr.max_queue_delay_us if spec.max_queue_delay_us is None else spec.max_queue_delay_us
    lines = [
        f'name: "{spec.name}"',
        'backend: "python"',
        f"max_batch_size: {max_batch}",
        f"version_policy: {{ latest: {{ num_versions: {spec.num_versions} }} }}",
        _tensor_block("input", spec.inputs),
        _tensor_block("output", spec.outputs),
        *([f"dynamic_batching {{ max_queue_delay_microseconds: {delay} }}"] if spec.dynamic_batching else []),
        f"instance_group [ {{ count: {spec.instances or tr.instances_per_model}{kind} }} ]",
        *(f'parameters {{ key: "{k}" value: {{ string_value: "{_quote(str(v))}" }} }}' for k, v in params.items()),
    ]
    return "\n".join(lines) + "\n"


CODE_DIR = "python"
"""Per version folder: the project's modules its model imports, first on the stub's ``sys.path``."""

SERVED_PACKAGES = ("shared", "training")
"""The project's packages a Triton model may import (``services`` and ``deploy`` never are)."""


def model_py(spec: ModelSpec) -> str:
    return (
        f'"""Generated by emotion export: {spec.module} served from the copy of the project\'s code\n'
        f'in {CODE_DIR}/ beside this file, so that Triton needs only the Python packages the docs name."""\n'
        "import sys\n"
        "from pathlib import Path\n\n"
        f'sys.path.insert(0, str(Path(__file__).resolve().parent / "{CODE_DIR}"))\n\n'
        f"from {spec.module} import TritonPythonModel  # noqa: E402, F401\n"
    )


def _module_file(module: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_modules(module: str, path: Path) -> set[str]:
    """The project modules ``module`` (at ``path``) imports, function-local imports included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m.partition(".")[0] in SERVED_PACKAGES and _module_file(m)}


def model_code(module: str) -> dict[str, Path]:
    """The project's source files ``module`` needs, as ``relative path -> file``: every module it
    imports, transitively, and the ``__init__.py`` of each package on the way (run on import)."""
    files: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            current = ".".join(parts[:depth])
            path = _module_file(current)
            if path is None:
                raise ValueError(f"{current} is not a module of the project (under {PROJECT_ROOT})")
            rel = path.relative_to(PROJECT_ROOT).as_posix()
            if rel not in files:
                files[rel] = path
                todo.extend(_imported_modules(current, path))
    return dict(sorted(files.items()))


def versions(model_root: Path) -> list[int]:
    """The integer version folders of one model, ascending."""
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit())


def read_export(version_dir: Path) -> dict:
    """``export.json`` of a version folder, or ``{}`` when there is none (an older export)."""
    path = version_dir / EXPORT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
