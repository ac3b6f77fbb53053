"""What the five pipeline services share: the Triton model each one calls.

A :class:`TritonService` names its model (``triton_model``); the model is connected in ``setup``
(waiting until Triton serves it), its version (the ``model_version`` parameter that ``emotion
export`` writes into ``config.pbtxt``) goes into every output and cache key, and it is closed with
the service.  Triton being unavailable or overloaded is a dependency failure the runtime retries
(:func:`shared.runtime.is_dependency_failure`).
"""

from __future__ import annotations

from shared.runtime import Context, Service
from shared.triton_client import TritonModel


class TritonService(Service):
    triton_model: str
    """The Triton model the service calls."""

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = TritonModel(ctx.settings, self.triton_model)
        self.model.wait_ready()
        self.model_parameters = self.model.parameters()
        self.model_version = self.model_parameters.get("model_version", "unknown")

    def close(self) -> None:
        if hasattr(self, "model"):
            self.model.close()
