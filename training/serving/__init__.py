"""Serving the models through Triton's Python backend.

:mod:`training.serving.repository` writes a versioned Triton model repository (one
``config.pbtxt`` and a two-line ``model.py`` per model); each ``model.py`` imports its
``TritonPythonModel`` from this package, so the model code is the same code training uses.
"""
