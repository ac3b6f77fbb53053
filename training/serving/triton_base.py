"""Shared plumbing of the project's Triton Python-backend models.

Each model subclass says how to load itself (``load``) and how to run one dynamic batch: either
``run(batch)`` on the requests' inputs concatenated along the batch axis (fixed-shape models), or
``infer(items)`` on the list of requests (models with ragged inputs, which pad or loop as they
need).  This base reads the config parameters and the version folder's ``export.json``, picks the
device Triton assigned, limits threads, converts requests and responses, and isolates failures:
when a batch fails, its requests are retried one by one so that only the bad request gets an
error.  ``triton_python_backend_utils`` only exists inside Triton, so it is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from shared.triton_models import SPEAKER_BASELINE, SPEAKER_COUNT, SPEAKER_MEAN, SPEAKER_VAR, TritonModelTensors

log = logging.getLogger(__name__)

Item = dict[str, "np.ndarray | None"]
"""One request's inputs by name (``None`` for an optional input the client left out)."""

_NUMPY = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_FP64": np.float64,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_INT8": np.int8,
    "TYPE_UINT8": np.uint8,
    "TYPE_BOOL": np.bool_,
    "TYPE_STRING": np.object_,
}


def to_bytes_array(values: list[str] | list[bytes], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Strings -> a BYTES tensor (``object`` array of UTF-8 ``bytes``), ``[len, 1]`` by default."""
    out = np.array([v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values], dtype=object)
    return out.reshape(shape or (len(values), 1))


def decode_strings(array: np.ndarray | None) -> list[str]:
    """A BYTES tensor -> one string per element (row-major)."""
    if array is None:
        return []
    return [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for v in np.asarray(array, dtype=object).reshape(-1)
    ]


def ragged_rows(values: np.ndarray, lengths: np.ndarray | None) -> list[np.ndarray]:
    """Rows of a padded ``[B, N, ...]`` tensor cut to ``lengths[b]`` (``[B]`` or ``[B, 1]``); every
    row whole when ``lengths`` is None."""
    if lengths is None:
        return list(values)
    n = np.asarray(lengths).reshape(-1)
    if n.shape[0] != values.shape[0]:
        raise ValueError(f"{n.shape[0]} lengths for {values.shape[0]} rows")
    if (n < 0).any() or (n > values.shape[1]).any():
        raise ValueError(f"lengths {n.tolist()} outside 0..{values.shape[1]}")
    return [row[: int(k)] for row, k in zip(values, n, strict=True)]


def speaker_baseline(item: Item | dict[str, np.ndarray], row: int | None = None) -> dict[str, np.ndarray]:
    """The ``speaker_count`` / ``speaker_mean`` / ``speaker_var`` fields (of
    ``training.models.FusionBatch``, or of ``UtteranceFeatures`` for one ``row``) from a request's
    ``SPEAKER_*`` inputs; empty when the client sent none (the model's prior alone)."""
    if any(item.get(t.name) is None for t in SPEAKER_BASELINE):
        return {}
    count = np.asarray(item[SPEAKER_COUNT.name], np.float32).reshape(-1)
    mean, var = np.asarray(item[SPEAKER_MEAN.name], np.float32), np.asarray(item[SPEAKER_VAR.name], np.float32)
    if row is None:
        return {"speaker_count": count, "speaker_mean": mean, "speaker_var": var}
    return {"speaker_count": float(count[row]), "speaker_mean": mean[row], "speaker_var": var[row]}


class TritonModelBase:
    tensors: type[TritonModelTensors]
    """The model's tensors (:mod:`shared.triton_models`): what is read from each request and written back."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """Required inputs; the first one gives the request's batch size."""
        return self.tensors.required_inputs()

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return self.tensors.optional_inputs()

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.tensors.output_names()

    def uses_torch(self) -> bool:
        """Whether this instance runs on torch (its threads are then limited here). Importing torch
        costs a stub process about 0.5 GB: the ASR model runs on CTranslate2, and the encoders'
        CPU instances on ONNX Runtime (:mod:`training.encoders.onnx`)."""
        return True

    def initialize(self, args: dict[str, Any]) -> None:
        from shared.settings import load_settings

        self.model_config = json.loads(args["model_config"])
        self.name = self.model_config.get("name", type(self).__name__)
        params = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}
        self.params = params
        self.threads = int(params.get("intra_op_threads", os.environ.get("OMP_NUM_THREADS", "1")))
        kind = args.get("model_instance_kind", "CPU")
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        self.version_dir = self._version_dir(args)
        self.exported = self._read_export()
        if self.uses_torch():
            import torch

            torch.set_num_threads(self.threads)
        self.model_version = self.exported.get("model_version") or params.get("model_version", "")
        if params.get("model_version") and self.model_version != params["model_version"]:
            log.warning(
                "%s: version folder %s serves %s but config.pbtxt says %s; run `emotion export` to reconcile",
                self.name,
                self.version_dir,
                self.model_version,
                params["model_version"],
            )
        self._dtypes = {o["name"]: _NUMPY.get(o["data_type"]) for o in self.model_config.get("output", [])}
        settings = load_settings()
        if params.get("models_dir"):
            settings.models.dir = type(settings.models_dir)(params["models_dir"])
        self.settings = settings
        self.load(settings, params)
        actual = self.served_version()
        if actual is not None:
            self.check_version(actual)
        log.info("%s %s ready on %s (%d threads)", self.name, self.model_version, self.device, self.threads)

    @staticmethod
    def _version_dir(args: dict[str, Any]) -> Path | None:
        repo, version = args.get("model_repository"), args.get("model_version")
        if not repo or not version:
            return None
        path = Path(repo) / str(version)
        return path if path.is_dir() else None

    def _read_export(self) -> dict[str, Any]:
        if self.version_dir is None:
            return {}
        from training.serving.repository import read_export

        return read_export(self.version_dir)

    def trained_dir(self) -> Path:
        """The trained model folder this version serves: the copy inside the version folder
        (written by ``emotion export``), else the ``trained_model_dir`` parameter."""
        if self.version_dir is not None and (self.version_dir / "trained").is_dir():
            return self.version_dir / "trained"
        if self.params.get("trained_model_dir"):
            return Path(self.params["trained_model_dir"])
        raise RuntimeError(
            f"{self.name}: no trained model (no trained/ in the version folder, no trained_model_dir parameter)"
        )

    def check_version(self, actual: str) -> None:
        """Refuse to serve weights other than the ones this version was exported with (features
        are cached under the model version, so a silent change would mix two models' outputs)."""
        pinned = self.exported.get("model_version")
        if pinned and actual != pinned:
            raise RuntimeError(
                f"{self.name}: the loaded model is {actual} but this version was exported for {pinned}; "
                "run `emotion export` to write a version for the new model"
            )

    def load(self, settings, params: dict[str, str]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def served_version(self) -> str | None:
        """The version of what :meth:`load` loaded (checked against ``export.json``); default: the
        ``version`` of an ``encoder`` attribute (the bundle encoders), else None (not checked)."""
        return getattr(getattr(self, "encoder", None), "version", None)

    # ---- inference --------------------------------------------------------------------------------

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """One batch of fixed-shape inputs, concatenated along axis 0 -> outputs with the same rows."""
        raise NotImplementedError

    def infer(self, items: list[Item]) -> list[dict[str, np.ndarray]]:
        """One dynamic batch (a list of requests) -> one output dict per request.  Default:
        concatenate every input along the batch axis, :meth:`run` once, split the rows back."""
        sizes = [item[self.inputs[0]].shape[0] for item in items]
        batch = {}
        for name in (*self.inputs, *self.optional_inputs):
            parts = [item.get(name) for item in items]
            if all(p is None for p in parts):
                continue
            if any(p is None for p in parts):
                raise ValueError(f"input {name} given by some requests of the batch only")
            batch[name] = np.concatenate(parts, axis=0)
        result = self.run(batch)
        out, start = [], 0
        for n in sizes:
            out.append({name: result[name][start : start + n] for name in self.outputs})
            start += n
        return out

    def _infer_isolated(self, items: list[Item]) -> list[dict[str, np.ndarray] | Exception]:
        try:
            return list(self.infer(items))
        except Exception as exc:  # one bad request must not fail the others, nor kill the instance
            if len(items) == 1:
                log.exception("%s: inference failed", self.name)
                return [exc]
            log.warning("%s: batch of %d requests failed (%s); retrying them one by one", self.name, len(items), exc)
            return [r for item in items for r in self._infer_isolated([item])]

    def _read(self, request) -> Item:
        import triton_python_backend_utils as pb_utils

        item: Item = {}
        for name in (*self.inputs, *self.optional_inputs):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None and name in self.inputs:
                raise ValueError(f"missing input {name}")
            item[name] = None if tensor is None else tensor.as_numpy()
        return item

    def _tensor(self, name: str, value: np.ndarray):
        import triton_python_backend_utils as pb_utils

        dtype = self._dtypes.get(name)
        array = np.asarray(value)
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
        return pb_utils.Tensor(name, np.ascontiguousarray(array))

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses: list[Any] = [None] * len(requests)
        items, where = [], []
        for i, request in enumerate(requests):
            try:
                items.append(self._read(request))
                where.append(i)
            except Exception as exc:
                responses[i] = exc
        if items:
            for i, result in zip(where, self._infer_isolated(items), strict=True):
                responses[i] = result
        out = []
        for result in responses:
            if isinstance(result, Exception):
                error = pb_utils.TritonError(f"{type(result).__name__}: {result}")
                out.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                out.append(
                    pb_utils.InferenceResponse(output_tensors=[self._tensor(n, result[n]) for n in self.outputs])
                )
        return out

    def finalize(self) -> None:
        log.info("%s unloaded", getattr(self, "name", "model"))
