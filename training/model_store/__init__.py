"""What the model bundle holds and how a model is found in it, without assembling anything.

* :mod:`.registry`: the models known, per profile, and how a role maps to a model name;
* :mod:`.manifest`: ``bundle.json`` (sources, licences, checksums) and the bundle's lock;
* :mod:`.resolve`: :func:`~.resolve.resolve`, a model's directory and version (never downloads);
* :mod:`.hub`: the Hugging Face Hub and its local cache; :mod:`.errors`: :class:`~.errors.BundleError`.

The encoders (:mod:`training.encoders`) find their weights through it, and :mod:`training.bundle`
assembles into it and runs the encoders to check what it built: the imports point one way,
``training.bundle -> training.encoders -> training.model_store``.
"""

from __future__ import annotations

from .errors import AssemblyCheckError, BundleError, ChecksumError, HubUnreachableError
from .hub import hub_reachable
from .manifest import MANIFEST_NAME, BundleManifest, CheckResult, FileEntry, LicenceEvidence, ModelRecord
from .registry import PROFILE_DEFAULTS, REGISTRY, TINY_MODELS, get_spec, model_name, specs_for_profile
from .resolve import ResolvedModel, resolve
from .spec import ModelSpec

__all__ = [
    "MANIFEST_NAME",
    "PROFILE_DEFAULTS",
    "REGISTRY",
    "TINY_MODELS",
    "AssemblyCheckError",
    "BundleError",
    "BundleManifest",
    "CheckResult",
    "ChecksumError",
    "FileEntry",
    "HubUnreachableError",
    "LicenceEvidence",
    "ModelRecord",
    "ModelSpec",
    "ResolvedModel",
    "get_spec",
    "hub_reachable",
    "model_name",
    "resolve",
    "specs_for_profile",
]
