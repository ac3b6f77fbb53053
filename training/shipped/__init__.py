"""Trained models that ship with the package: ``default/`` is the one ``emotion demo`` serves (its MODEL_CARD.md)."""
