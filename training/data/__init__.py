"""Datasets in their real formats, and a synthetic call-centre corpus.

* :mod:`~training.data.manifest` -- the generic JSON-lines manifest, :class:`Example`, splits;
* :mod:`~training.data.audio` -- robust audio loading and resampling;
* :mod:`~training.data.iemocap` -- IEMOCAP from its release layout;
* :mod:`~training.data.aihub` -- the AI-Hub Korean emotion dialogue CSV + wavs;
* :mod:`~training.data.corpora` -- RAVDESS, CREMA-D, TESS, MELD, DailyDialog and GoEmotions from
  their published layouts (``emotion data prepare``, :mod:`~training.data.prepare`);
* :mod:`~training.data.synthetic` -- an espeak-ng call-centre corpus generator (with
  :mod:`~training.data.prosody`, :mod:`~training.data.templates`,
  :mod:`~training.data.telephony`, :mod:`~training.data.espeak`).

The synthetic generator is imported lazily (``from training.data.synthetic import
generate_corpus``) so that reading datasets does not need espeak-ng.
"""

from training.data.aihub import load_aihub
from training.data.audio import load_audio
from training.data.iemocap import load_iemocap, session_folds
from training.data.labels import normalize_emotion
from training.data.manifest import (
    SPLITS,
    Example,
    ManifestError,
    assign_splits,
    read_manifest,
    split_examples,
    write_manifest,
)

__all__ = [
    "SPLITS",
    "Example",
    "ManifestError",
    "assign_splits",
    "load_aihub",
    "load_audio",
    "load_iemocap",
    "normalize_emotion",
    "read_manifest",
    "session_folds",
    "split_examples",
    "write_manifest",
]
