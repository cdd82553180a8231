"""Feature store: pin text, image paths, fresh flags and board names, by internal id.

Stored in the graph directory as Arrow IPC tables (``pin_features.arrow``,
``board_features.arrow``) whose row ``i`` belongs to internal id ``i``; opened memory-mapped and
fetched in batches with ``take``. Image paths are relative to ``root`` (the dataset directory).

Where the images are: a store records its dataset directory twice, as an absolute path
(``root``) and relative to the store directory (``root_relative``, when the two share a
filesystem root), so a store that moves together with its dataset (the same relative place,
e.g. a sibling or an ancestor) keeps finding its images. At open the relative place wins when it
exists, then the absolute one (stores written before ``root_relative`` have only that); a root
given again (``PinBoardGraph.open(path, image_root=DIR)``, ``data.image_root=DIR`` in a training
config) overrides both. When neither exists the store still opens (its graph needs no images),
and the first image asked for raises ``ImageRootError`` naming the recorded root, where it was
looked for and the fix (``check_image_root`` raises it up front).

Image paths never leave the dataset directory: ``pin_image_paths`` resolves each one
(symlinks included, ``os.path.realpath``) and raises ``ImagePathError`` when a path is absolute
or resolves outside ``root``; ``graph.dataset`` rejects such paths at build time already
(``find_unsafe_image_path``), and the read-time check catches a symlink made since.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from graph import storage
from graph.errors import ToolkitError

PIN_COLUMNS = {"text": pa.large_string(), "image": pa.large_string(), "fresh": pa.bool_()}
BOARD_COLUMNS = {"name": pa.large_string()}

# Paths whose text does not name their parent directory plainly ("a/../b", "./a", "a//b",
# "a/"): they cannot be checked by their parent directory and are resolved one by one.
_UNPLAIN_PATH = r"(^|/)\.\.?(/|$)|//|/$"


class ImagePathError(ToolkitError, ValueError):
    """A pin's image path is absolute or resolves outside the dataset directory.

    Attributes: ``pin`` (internal id, = row of the pins table), ``path`` (as stored),
    ``problem`` (the sentence without the pin).
    """

    def __init__(self, pin: int, path: str, problem: str) -> None:
        self.pin, self.path, self.problem = int(pin), path, problem
        super().__init__(f"pin {self.pin} (row {self.pin} of the pins table): image path {path!r} {problem}")


class ImageRootError(ToolkitError, FileNotFoundError):
    """The image root (dataset directory) of a graph store is not where it was recorded, nor
    where a given ``image_root`` points; the message names both paths and the fix.

    Takes one message argument, so a DataLoader worker's error re-raises as this type.
    """


def image_root_record(root: str | os.PathLike | None, directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest keys of an image root written into store ``directory``: ``root`` (absolute)
    and ``root_relative`` (relative to the store directory, both resolved, so that ``..`` means
    the same as on disk), or only ``root`` when no relative path exists (another drive)."""
    if root is None:
        return {"root": None}
    absolute = str(Path(root).absolute())
    rec: dict[str, Any] = {"root": absolute}
    try:
        # The store is written into a temporary sibling of its final place (graph.atomic): the
        # same parent, so the relative path is the same from there.
        rec["root_relative"] = os.path.relpath(os.path.realpath(absolute), os.path.realpath(directory))
    except ValueError:  # pragma: no cover - Windows: another drive
        pass
    return rec


def resolve_image_root(rec: dict[str, Any], directory: str | os.PathLike,
                       image_root: str | os.PathLike | None = None) -> tuple[Path | None, str | None]:
    """``(root, note)`` of a store's features record ``rec`` opened from ``directory``: the
    given ``image_root`` when not None, else the relative place (``root_relative`` from the
    store) when it exists, else the recorded absolute ``root``. ``note`` describes what was
    recorded and tried, for ``ImageRootError`` (None when the root was given or is None)."""
    recorded = rec.get("root")
    relative = rec.get("root_relative")
    if image_root is not None:
        return (Path(image_root).expanduser().absolute(),
                f"image_root={image_root} was given (graph store {Path(directory)} recorded {recorded})")
    if recorded is None and relative is None:
        return None, None
    candidates: list[Path] = []
    if relative is not None:
        candidates.append(Path(os.path.normpath(os.path.join(os.path.realpath(directory), relative))))
    if recorded is not None:
        candidates.append(Path(recorded) if os.path.isabs(recorded) else Path(directory).absolute() / recorded)
    for candidate in candidates:
        if candidate.is_dir():
            # Unmoved: keep the recorded spelling (the same directory, symlinks unresolved).
            if candidates[-1] != candidate and candidates[-1].is_dir() and os.path.samefile(candidate, candidates[-1]):
                return candidates[-1], None
            return candidate, None
    tried = list(dict.fromkeys(str(c) for c in candidates))
    missing = f"{tried[0]} does not exist" if len(tried) == 1 else f"neither {tried[0]} nor {tried[1]} exists"
    note = (f"graph store {Path(directory)} recorded its image root (the dataset directory) as {recorded}"
            + (f" ({relative} from the store)" if relative is not None else "") + f", but {missing}")
    return candidates[0], note


def image_path_problem(real_root: str, relative: str) -> str | None:
    """Why ``relative`` is not a safe image path under ``real_root`` (an already resolved
    directory, ``os.path.realpath``), or None when it is. Symlinks are resolved; a path that does
    not exist is resolved as far as it exists (whether the file exists is not checked here)."""
    if "\0" in relative:
        return "contains a NUL character"
    if os.path.isabs(relative):
        return "is absolute; image paths must be relative to the dataset directory"
    resolved = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([resolved, real_root]) != real_root:
        return f"resolves to {resolved}, outside the dataset directory {real_root}"
    return None


def find_unsafe_image_path(images: pa.Array | pa.ChunkedArray, root: str | os.PathLike
                           ) -> tuple[int, str, str] | None:
    """``(row, path, problem)`` of the first image path that is absolute or resolves outside
    ``root``, or None. ``images``: string [N], null where a pin has no image.

    Cost: vectorized string tests over the column, one ``realpath`` per distinct parent
    directory and one directory listing (``os.scandir``, no per-file ``stat``) of each to find
    symlinked files; only suspicious rows are resolved one by one. A per-file ``realpath``
    measured 15 us a path (150 s for 10M images); this is about 0.6 us an entry.
    """
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks()
    if len(images) == 0 or images.null_count == len(images):
        return None
    real_root = os.path.realpath(root)
    images = images.cast(pa.large_string())
    suspicious = pc.or_(pc.starts_with(images, "/"), pc.match_substring_regex(images, _UNPLAIN_PATH))
    parents = pc.replace_substring_regex(images, r"/?[^/]*$", "")  # "" for a top-level file
    plain = pc.and_not(pc.invert(images.is_null()), suspicious.fill_null(False))
    escaping_parents, symlinks = [], []
    for parent in pc.unique(parents.filter(plain)).to_pylist():
        if image_path_problem(real_root, parent or ".") is not None:
            escaping_parents.append(parent)
            continue
        try:
            with os.scandir(os.path.join(real_root, parent)) as entries:
                prefix = parent + "/" if parent else ""
                symlinks.extend(prefix + e.name for e in entries if e.is_symlink())
        except OSError:
            pass  # a missing directory: its images are missing, not escaping (checked at read time)
    candidates = suspicious.fill_null(False)
    if escaping_parents:
        candidates = pc.or_(candidates, pc.is_in(parents, pa.array(escaping_parents, pa.large_string())))
    if symlinks:
        candidates = pc.or_(candidates, pc.is_in(images, pa.array(symlinks, pa.large_string())))
    for row in np.flatnonzero(np.asarray(candidates.fill_null(False))):
        path = images[int(row)].as_py()
        problem = image_path_problem(real_root, path)
        if problem is not None:
            return int(row), path, problem
    return None


def _ids(ids: Any) -> pa.Array:
    if isinstance(ids, torch.Tensor):
        ids = ids.cpu().numpy()
    return pa.array(np.asarray(ids, dtype=np.int64))


@dataclass
class FeatureStore:
    """pins: Arrow table [P] (text, image, fresh); boards: Arrow table [B] (name); root: image dir."""

    pins: pa.Table
    boards: pa.Table
    root: Path | None = None
    # Set by ``open`` when the recorded root was not found: what was recorded and tried (the
    # start of ``ImageRootError``'s message), or that the root was given.
    root_note: str | None = field(default=None, repr=False, compare=False)
    # (root, its realpath): resolved once, again only if ``root`` is reassigned.
    _resolved_root: tuple[Path, str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for col in PIN_COLUMNS:
            if col not in self.pins.column_names:
                raise ValueError(f"pin features: missing column {col!r}")
        if "name" not in self.boards.column_names:
            raise ValueError("board features: missing column 'name'")

    def pin_text(self, ids: Any) -> list[str | None]:
        """Captions of pins ``ids`` (int [N]); None where a pin has no text."""
        return self.pins.column("text").take(_ids(ids)).to_pylist()

    def pin_image_paths(self, ids: Any) -> list[Path | None]:
        """Absolute image paths of pins ``ids`` (int [N]); None where a pin has no image.

        Every path is checked to stay inside ``root`` (the current directory when ``root`` is
        None) with symlinks resolved: ``ImagePathError`` names the first pin whose path is
        absolute or escapes. The check costs one ``realpath`` a path, small beside a decode.
        A ``root`` that does not exist raises ``ImageRootError`` (``check_image_root``).
        """
        ids = _ids(ids)
        rel = self.pins.column("image").take(ids).to_pylist()
        root = Path(self.root or ".")
        if self._resolved_root is None or self._resolved_root[0] != root:
            self.check_image_root()
            self._resolved_root = (root, os.path.realpath(root))
        real_root = self._resolved_root[1]
        out: list[Path | None] = []
        for pin, r in zip(ids.to_pylist(), rel):
            if r is None:
                out.append(None)
                continue
            problem = image_path_problem(real_root, r)
            if problem is not None:
                raise ImagePathError(pin, r, problem)
            out.append(root / r)
        return out

    def check_image_root(self) -> None:
        """Raise ``ImageRootError`` when ``root`` is not an existing directory (the dataset moved):
        the message names the recorded root, what it resolved to and the fix."""
        root = Path(self.root or ".")
        if root.is_dir():
            return
        note = self.root_note or f"image root {root} is not a directory"
        if self.root_note and self.root_note.startswith("image_root="):
            note = f"{self.root_note}, but {root} is not a directory"
        raise ImageRootError(f"{note}. The dataset directory (its images) moved? Give its new place: "
                             "data.image_root=DIR in a training config (or on the command line), or "
                             "PinBoardGraph.open(path, image_root=DIR) in Python")

    def pin_fresh(self, ids: Any) -> torch.Tensor:
        """bool [N]: the dataset's ``fresh`` flag."""
        col = self.pins.column("fresh").take(_ids(ids))
        return torch.from_numpy(np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool))

    def board_names(self, ids: Any) -> list[str | None]:
        return self.boards.column("name").take(_ids(ids)).to_pylist()

    def write_into(self, directory: Path) -> dict[str, Any]:
        return {
            **image_root_record(self.root, directory),
            "pins": storage.write_table(directory, "pin_features", self.pins),
            "boards": storage.write_table(directory, "board_features", self.boards),
        }

    @classmethod
    def open(cls, directory: Path, rec: dict[str, Any], verify: str,
             image_root: str | os.PathLike | None = None) -> "FeatureStore":
        """The features of the store at ``directory`` (``rec``: its manifest's ``features``);
        ``image_root`` overrides the recorded dataset directory (``resolve_image_root``)."""
        root, note = resolve_image_root(rec, directory, image_root)
        return cls(storage.open_table(directory, rec["pins"], verify),
                   storage.open_table(directory, rec["boards"], verify), root, root_note=note)
