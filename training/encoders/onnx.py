"""The encoders' networks on ONNX Runtime, for serving on CPU without torch.

Importing torch (PyPI's build links CUDA) costs a process about 0.5 GB of RSS before any weight is
loaded; ONNX Runtime costs about 60 MB.  The served ``text_encoder`` and ``speech_encoder`` run on
CPU instances with ONNX Runtime: their network (the torch module the in-process encoder runs,
exported once by ``emotion export``) is read from an ONNX file whose weights lie in a separate
file that ONNX Runtime maps into memory, so only the pages a request touches become resident
(most of a multilingual text encoder's weights are its word-embedding table, of which an utterance
touches a few rows).  Tokenisation, log-mel, pooling and padding are the encoders' own numpy code,
the same in both runtimes.

Layout of an exported network (:func:`network_dir` names the folder)::

    <models_dir>/onnx/<encoder>-<digest>[-layerK]/network.onnx        # the graph
    <models_dir>/onnx/<encoder>-<digest>[-layerK]/network.onnx.data   # its weights
    <models_dir>/onnx/<encoder>-<digest>[-layerK]/front_end.json      # what the numpy side needs
    <models_dir>/onnx/<encoder>-<digest>[-layerK]/front_end.npz       # its arrays (mel filters)
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("training.encoders")

GRAPH_FILE = "network.onnx"
WEIGHTS_FILE = "network.onnx.data"
FRONT_END_FILE = "front_end.json"
ARRAYS_FILE = "front_end.npz"


def network_dir(models_dir: Path, bundle_version: str, layer: int | None = None) -> Path:
    """Folder of the exported network of the bundle encoder ``bundle_version`` (``name@digest``),
    read at hidden state ``layer`` (None: the last).  Level and prosody are applied around the
    network, so they do not name a different network."""
    slug = bundle_version.replace("@", "-").replace("/", "_")
    return Path(models_dir) / "onnx" / (slug + (f"-layer{layer}" if layer is not None else ""))


class OnnxNetwork:
    """An exported network on ONNX Runtime's CPU provider: named numpy inputs in, its outputs out
    (calling it gives the first, an encoder's hidden state ``[B, N, D]``; :meth:`outputs` all)."""

    def __init__(self, folder: Path, threads: int | None = 1) -> None:
        import onnxruntime as ort

        path = Path(folder) / GRAPH_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no exported network here; `emotion export` writes it")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads or 1))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.front_end = read_front_end(folder)

    def outputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.outputs(inputs)[self.output_names[0]], np.float32)


def read_front_end(folder: Path) -> dict[str, Any]:
    """The JSON the exporter wrote beside the network, with its arrays (``front_end.npz``) added."""
    folder = Path(folder)
    meta = json.loads((folder / FRONT_END_FILE).read_text())
    if (folder / ARRAYS_FILE).is_file():
        with np.load(folder / ARRAYS_FILE) as arrays:
            meta.update({k: arrays[k] for k in arrays.files})
    return meta


def export_network(
    module: torch.nn.Module,
    example: dict[str, torch.Tensor],
    dynamic: dict[str, dict[int, str]],
    folder: Path,
    front_end: dict[str, Any],
    outputs: tuple[str, ...] = ("hidden",),
) -> Path:
    """Export ``module`` (called with the keyword inputs ``example``, returning ``outputs``; the
    dimensions ``dynamic`` names vary) to ``folder`` with its front end (what the numpy side
    needs), atomically: the folder appears whole or not at all.  Returns ``folder``."""
    import onnx
    import torch

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        staged = Path(tmp) / folder.name
        staged.mkdir()
        dims: dict[str, Any] = {}
        shapes = {
            name: {axis: dims.setdefault(label, torch.export.Dim(label, max=1 << 20)) for axis, label in axes.items()}
            for name, axes in dynamic.items()
        }
        raw = Path(tmp) / "raw.onnx"
        chatter = io.StringIO()  # the exporter prints its progress; keep it for the debug log
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (),
                str(raw),
                kwargs=example,
                input_names=list(example),
                output_names=list(outputs),
                dynamic_shapes=shapes,
                dynamo=True,
                external_data=True,
            )
        log.debug("torch.onnx.export: %s", chatter.getvalue())
        onnx.save_model(
            onnx.load(str(raw)),
            str(staged / GRAPH_FILE),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=WEIGHTS_FILE,
            size_threshold=1024,
        )
        arrays = {k: v for k, v in front_end.items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in front_end.items() if k not in arrays}
        (staged / FRONT_END_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if arrays:
            np.savez(staged / ARRAYS_FILE, **arrays)
        if folder.exists():  # written meanwhile by another export: keep that one
            return folder
        staged.rename(folder)
    log.info("exported the encoder network to %s in %.0f s", folder, time.monotonic() - started)
    return folder
