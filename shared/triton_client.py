"""A small Triton client for the services: gRPC, typed numpy in and out, retries with backoff.

gRPC rather than HTTP: tritonclient's HTTP ``async_infer`` serialises requests, gRPC does not, and
the services rely on several requests in flight so that Triton's dynamic batcher can merge them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from shared.settings import Settings

log = logging.getLogger(__name__)

# gRPC status codes worth retrying: the server is starting, restarting or overloaded.
_RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED")


class TritonError(RuntimeError):
    """Inference failed after the configured retries, or the request itself was invalid."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


def _retryable(exc: InferenceServerException) -> bool:
    status = str(exc.status() or "")
    return status in _RETRYABLE or "failed to connect" in str(exc).lower() or "not ready" in str(exc).lower()


@dataclass
class TritonModel:
    """One model served by Triton.  ``infer`` takes and returns dicts of numpy arrays."""

    settings: Settings
    name: str
    version: str = ""

    def __post_init__(self) -> None:
        self._client = grpcclient.InferenceServerClient(url=self.settings.triton.grpc_url)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or self.settings.triton.startup_timeout_s)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self._client.is_model_ready(self.name, self.version):
                    return
            except InferenceServerException as exc:
                last = exc
            time.sleep(0.5)
        raise TritonError(f"model {self.name!r} not ready on {self.settings.triton.grpc_url}: {last}", retryable=True)

    def parameters(self) -> dict[str, str]:
        """The model's ``config.pbtxt`` parameters (e.g. the model version string it serves)."""
        config = self._client.get_model_config(self.name, self.version, as_json=True)["config"]
        return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        requests = []
        for name, array in inputs.items():
            if array.dtype.kind in ("U", "S", "O"):
                array = np.asarray([s.encode("utf-8") if isinstance(s, str) else s for s in array.ravel()], dtype=object).reshape(array.shape)
                dtype = "BYTES"
            else:
                dtype = np_to_triton_dtype(array.dtype)
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            requests.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(o) for o in outputs]
        attempts = self.settings.triton.retries + 1
        for attempt in range(attempts):
            try:
                result = self._client.infer(
                    self.name, requests, model_version=self.version, outputs=wanted,
                    client_timeout=self.settings.triton.request_timeout_s,
                )
                return {o: result.as_numpy(o) for o in outputs}
            except InferenceServerException as exc:
                retry = _retryable(exc)
                if not retry or attempt == attempts - 1:
                    raise TritonError(f"{self.name}: {exc.message() or exc}", retryable=retry) from exc
                delay = self.settings.triton.retry_backoff_s * (2**attempt)
                log.warning("triton %s unavailable (%s); retry %d/%d in %.1f s", self.name, exc.status(), attempt + 1, attempts - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()
