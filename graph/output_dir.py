"""One output policy for every command that writes a directory.

A writer (``build-graph``, ``synth``, ``embed``, ``ann-index``, ``report``, ``demo``, baselines,
caches) may write into ``--out`` only when it is

* missing, or an empty directory, or
* a directory holding *the same writer's own* valid manifest (the previous output of the same
  command, which the writer replaces atomically or continues).

Anything else is refused with :class:`OutputDirError` (exit 2 in the CLI) naming the path and
what it holds: a file, a symlink, the current directory or one of its parents, a training run,
a dataset, another command's output, a folder of the user's, a manifest that is unreadable or
of another format. Nothing of the user's is deleted without the user deleting it first.

Each writer describes its own output with an :class:`OutputKind` constant next to the code that
writes the manifest, and passes it to ``graph.atomic.atomic_directory`` (which calls
:func:`check_output_dir` before any work) or calls :func:`check_output_dir` itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from graph.errors import ToolkitError

__all__ = ["OutputKind", "OutputDirError", "check_output_dir", "describe_directory"]


class OutputDirError(ToolkitError, ValueError):
    """``--out`` names something this command must not write into or replace."""


@dataclass(frozen=True)
class OutputKind:
    """What one writer leaves in its output directory.

    what: a noun for messages ("graph store"); command: who writes it ("pinclip build-graph");
    manifest: the file name of its manifest (JSON object); key / value: the manifest field that
    identifies the writer (e.g. ``format == "pinclip-graph"``).
    """
    what: str
    command: str
    manifest: str
    key: str
    value: str

    def owns(self, directory: Path) -> bool:
        """True when ``directory`` holds this writer's manifest, readable and identified."""
        return _manifest_value(directory / self.manifest, self.key) == self.value


# Outputs this toolkit knows how to recognise, for messages that say what a directory holds.
# (Writers in upper packages register theirs through ``OutputKind`` constants; the few here are
# sniffed without importing those packages.)
_KNOWN_MANIFESTS = [
    ("manifest.json", "format", {"pinclip-graph": "a graph store (pinclip build-graph)",
                                 "pinclip-embeddings": "exported embeddings (pinclip embed)",
                                 "pinclip-ann-index": "an ANN index (pinclip ann-index)",
                                 "pinclip-text-features": "a text feature cache",
                                 "pinclip-model": "an exported model (pinclip export)"}),
    ("synth.json", "generator", {"graph.synth": "a synthetic dataset (pinclip synth)"}),
    ("unihan.json", "generator", {"graph.unihan": "a Unihan dataset (pinclip datasets unihan)"}),
    ("method.json", "format", {"pinclip-baseline": "a baseline method directory"}),
    ("report.json", "format", {"pinclip-report": "a report (pinclip report)"}),
]


def _manifest_value(path: Path, key: str) -> object:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def describe_directory(directory: Path) -> str:
    """A short phrase saying what an existing non-empty directory holds, for refusals."""
    for name, key, known in _KNOWN_MANIFESTS:
        if (directory / name).exists():
            value = _manifest_value(directory / name, key)
            if value in known:
                return known[value]
            if name == "manifest.json":
                return f"a {name} of another format ({key}={value!r})" if value is not None \
                    else f"a {name} that is not a readable toolkit manifest"
    if (directory / "config.yaml").is_file() and ((directory / "checkpoints").is_dir()
                                                  or (directory / "metrics.jsonl").exists()
                                                  or (directory / "model_config.json").exists()):
        return "a training run (config.yaml, checkpoints)"
    if (directory / "demo.json").is_file():
        return "a demo directory (pinclip demo)"
    if any((directory / f"pins.{ext}").exists() for ext in ("parquet", "csv")):
        return "a dataset (pins table)"
    try:
        entries = sorted(p.name for p in directory.iterdir())
    except OSError as exc:
        return f"something unreadable ({exc.strerror})"
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    return f"{len(entries)} entries of its own ({shown})"


def check_output_dir(path: str | os.PathLike, kind: OutputKind) -> Path:
    """Check that ``kind``'s writer may write ``path``; return it absolute.

    Allowed: a missing path, an empty directory, or a directory that ``kind.owns``. Raises
    OutputDirError otherwise, naming the path and what it holds.
    """
    path = Path(path).expanduser().absolute()
    hint = f"pick a new --out, or remove it yourself if replacing it is really meant"
    if path.is_symlink():
        raise OutputDirError(f"{path}: is a symbolic link (to {os.readlink(path)}); refusing to write "
                             f"{kind.what} through it: {hint}")
    if not path.exists():
        return path
    if not path.is_dir():
        raise OutputDirError(f"{path}: is a file, not a directory; refusing to replace it with {kind.what}: {hint}")
    cwd = Path.cwd().absolute()
    if path == cwd or path in cwd.parents:
        raise OutputDirError(f"{path}: is the current directory{'' if path == cwd else ' or holds it'}; "
                             f"refusing to write {kind.what} there: pick a new --out (e.g. {path / kind.what.replace(' ', '_')})")
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot be listed ({exc.strerror}); refusing to write {kind.what} there") from None
    if empty or kind.owns(path):
        return path
    raise OutputDirError(f"{path}: exists and holds {describe_directory(path)}, not {kind.what} written by "
                         f"{kind.command}; refusing to replace it: {hint}")
