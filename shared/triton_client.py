"""A small Triton client for the services: gRPC, typed numpy in and out, retries with backoff.

gRPC rather than HTTP: tritonclient's HTTP ``async_infer`` serialises requests, gRPC does not, and
the services rely on several requests in flight so that Triton's dynamic batcher can merge them.
"""

from __future__ import annotations

import functools
import logging
import threading
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


_MODEL_AWAY = (
    "failed to connect",
    "not ready",
    "unknown model",
    "no available versions",
    "is not found",
    "unavailable",
)
"""Messages of a model that is not (or no longer, or not yet) loaded: Triton starting, shutting down
(it unloads every model before it stops listening) or loading a new version.  A dependency failure
to wait out, never a verdict on the request: retrying them is what keeps a Triton restart from
dead-lettering the batches in flight."""


def _retryable(exc: InferenceServerException) -> bool:
    status = str(exc.status() or "")
    text = str(exc).lower()
    return status in _RETRYABLE or any(m in text for m in _MODEL_AWAY)


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
        """One request: its outputs by name."""
        return self.infer_many([inputs], outputs)[0]

    def infer_many(self, requests: list[dict[str, np.ndarray]], outputs: list[str]) -> list[dict[str, np.ndarray]]:
        """Several requests in flight at once; their outputs, in order (see :meth:`submit_many`)."""
        return self.submit_many(requests, outputs).result()

    def submit_many(self, requests: list[dict[str, np.ndarray]], outputs: list[str]) -> InFlight:
        """Send several requests at once and return without waiting: Triton spreads them over
        the model's instances (or its dynamic batcher merges them).  :meth:`InFlight.result`
        waits for the answers, sending again, with exponential backoff, the requests that failed
        for a retryable reason; :class:`TritonError` when one still fails."""
        return InFlight(self, [self._tensors(r) for r in requests], outputs)

    @staticmethod
    def _tensors(inputs: dict[str, np.ndarray]) -> list:
        tensors = []
        for name, array in inputs.items():
            if array.dtype.kind in ("U", "S", "O"):
                array = np.asarray(
                    [s.encode("utf-8") if isinstance(s, str) else s for s in array.ravel()], dtype=object
                ).reshape(array.shape)
                dtype = "BYTES"
            else:
                dtype = np_to_triton_dtype(array.dtype)
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return tensors

    def close(self) -> None:
        self._client.close()


class InFlight:
    """Requests sent together by :meth:`TritonModel.submit_many`, answered in any order."""

    def __init__(self, model: TritonModel, tensors: list[list], outputs: list[str]):
        self.model, self.tensors, self.outputs = model, tensors, outputs
        self.wanted = [grpcclient.InferRequestedOutput(o) for o in outputs]
        self.results: list[dict[str, np.ndarray] | None] = [None] * len(tensors)
        self.errors: dict[int, InferenceServerException] = {}
        self._lock = threading.Lock()
        self._all_answered = threading.Event()
        self._send(list(range(len(tensors))))

    def _send(self, todo: list[int]) -> None:
        self._waiting = len(todo)
        self._all_answered.clear()
        if not todo:
            self._all_answered.set()
        m = self.model
        for i in todo:
            try:
                m._client.async_infer(
                    m.name,
                    self.tensors[i],
                    functools.partial(self._answered, i),
                    model_version=m.version,
                    outputs=self.wanted,
                    client_timeout=m.settings.triton.request_timeout_s,
                )
            except InferenceServerException as exc:  # refused before it was sent
                self._answered(i, None, exc)

    def _answered(self, i: int, result, error) -> None:
        if error is not None:
            self.errors[i] = error
        else:
            self.results[i] = {o: result.as_numpy(o) for o in self.outputs}
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0:
                self._all_answered.set()

    def wait(self, timeout_s: float) -> bool:
        """Whether every request has been answered (successfully or not), waiting at most ``timeout_s``."""
        return self._all_answered.wait(timeout_s)

    def result(self) -> list[dict[str, np.ndarray]]:
        """The outputs, in request order, once all are answered; failed requests are retried."""
        m = self.model
        timeout = m.settings.triton.request_timeout_s + 5
        attempts = m.settings.triton.retries + 1
        for attempt in range(attempts):
            if not self.wait(timeout):
                raise TritonError(f"{m.name}: no answer within {timeout:.0f} s", retryable=True)
            if not self.errors:
                return self.results  # type: ignore[return-value]
            errors, self.errors = self.errors, {}
            first = errors[min(errors)]
            retry = all(_retryable(e) for e in errors.values())
            if not retry or attempt == attempts - 1:
                raise TritonError(f"{m.name}: {first.message() or first}", retryable=retry) from first
            delay = m.settings.triton.retry_backoff_s * (2**attempt)
            log.warning(
                "triton %s unavailable (%s); retry %d/%d of %d request(s) in %.1f s",
                m.name,
                first.status(),
                attempt + 1,
                attempts - 1,
                len(errors),
                delay,
            )
            time.sleep(delay)
            self._send(sorted(errors))
        raise AssertionError("unreachable")
