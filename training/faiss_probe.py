"""The one place that detects faiss, an optional dependency (``pip install 'pinclip-toolkit[faiss]'``,
i.e. faiss-cpu).

* :func:`require_faiss`: import and return the ``faiss`` module, or raise
  :class:`FaissMissingError` whose message says how to install it (ANN serving, ``training.ann``);
* :func:`faiss_available`: whether faiss imports at all (the ``backend="auto"`` choice of
  ``training.evaluation.retrieval``).

faiss itself is imported only when one of these is called.
"""
from __future__ import annotations

from graph.errors import ToolkitError

__all__ = ["FaissMissingError", "require_faiss", "faiss_available"]


class FaissMissingError(ToolkitError, ImportError):
    """faiss does not import; the message says how to install the optional extra."""


def require_faiss():
    """Import and return the ``faiss`` module, or raise :class:`FaissMissingError`."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FaissMissingError(
            "faiss is not installed; ANN indexes need the optional extra: pip install 'pinclip-toolkit[faiss]' "
            f"(or pip install faiss-cpu); import error: {exc}") from None
    return faiss


def faiss_available() -> bool:
    """True when faiss imports (any failure to import it, not only ImportError, gives False)."""
    try:
        require_faiss()
        return True
    except Exception:  # pragma: no cover - depends on the environment
        return False
