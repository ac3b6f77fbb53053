"""Shared plumbing of the project's Triton Python-backend models.

Each model subclass says how to load itself (``load``) and how to run one batch (``run``);
this base reads the config parameters, picks the device Triton assigned, limits threads, and
converts requests and responses.  ``triton_python_backend_utils`` only exists inside Triton, so
it is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class TritonModelBase:
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def initialize(self, args: dict[str, Any]) -> None:
        import torch

        from shared.settings import load_settings

        self.model_config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in self.model_config.get("parameters", {}).items()}
        self.params = params
        threads = int(params.get("intra_op_threads", os.environ.get("OMP_NUM_THREADS", "1")))
        torch.set_num_threads(threads)
        kind = args.get("model_instance_kind", "CPU")
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        settings = load_settings()
        if params.get("models_dir"):
            settings.models.dir = type(settings.models_dir)(params["models_dir"])
        self.settings = settings
        self.load(settings, params)
        log.info("%s ready on %s (%d threads)", self.model_config["name"], self.device, threads)

    def load(self, settings, params: dict[str, str]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, requests):
        """Concatenate every request of the dynamic batch, run once, split the results."""
        import triton_python_backend_utils as pb_utils

        sizes, columns = [], {name: [] for name in self.inputs}
        for request in requests:
            for name in self.inputs:
                columns[name].append(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
            sizes.append(columns[self.inputs[0]][-1].shape[0])
        batch = {name: np.concatenate(parts, axis=0) for name, parts in columns.items()}
        try:
            result = self.run(batch)
        except Exception as exc:  # one bad batch must not kill the instance
            log.exception("inference failed")
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(result[name][start:start + n])) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        log.info("%s unloaded", self.model_config.get("name", "model"))
