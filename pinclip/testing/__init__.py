"""Test helpers that ship with the model library (no test framework needed to use them).

:mod:`pinclip.testing.tiny_checkpoints` writes tiny random Hugging Face checkpoints, offline, for
every model family the toolkit loads; the test suite takes its Hugging Face models from it.
``from pinclip.testing import write_tiny_checkpoints`` works too (imported on first use, so that
``python -m pinclip.testing.tiny_checkpoints`` runs the module once).
"""
_EXPORTS = ("FAMILIES", "TinyCheckpointError", "available_families", "write_tiny_checkpoints")
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        from . import tiny_checkpoints
        return getattr(tiny_checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
