"""Exceptions raised by the model bundle."""

from __future__ import annotations


class BundleError(RuntimeError):
    """A model could not be resolved, assembled or verified.

    Every failure of the bundle is reported as a ``BundleError`` (or a subclass) with a message
    that says what went wrong and what to do about it; the bundle never falls back silently to
    other (e.g. random) weights.
    """


class ChecksumError(BundleError):
    """A file of an assembled model no longer matches the checksum recorded in ``bundle.json``."""


class HubUnreachableError(BundleError):
    """A model needs the Hugging Face Hub, the Hub cannot be reached and no local copy exists."""


class AssemblyCheckError(BundleError):
    """An assembly check (e.g. rebuilt encoder vs. reference engine) failed."""
