"""Feature store: pin text, image paths, fresh flags and board names, by internal id.

Stored in the graph directory as Arrow IPC tables (``pin_features.arrow``,
``board_features.arrow``) whose row ``i`` belongs to internal id ``i``; opened memory-mapped and
fetched in batches with ``take``. Image paths are relative to ``root`` (the dataset directory).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from graph import storage

PIN_COLUMNS = {"text": pa.large_string(), "image": pa.large_string(), "fresh": pa.bool_()}
BOARD_COLUMNS = {"name": pa.large_string()}


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
        """Absolute image paths of pins ``ids``; None where a pin has no image."""
        rel = self.pins.column("image").take(_ids(ids)).to_pylist()
        root = self.root or Path(".")
        return [None if r is None else root / r for r in rel]

    def pin_fresh(self, ids: Any) -> torch.Tensor:
        """bool [N]: the dataset's ``fresh`` flag."""
        col = self.pins.column("fresh").take(_ids(ids))
        return torch.from_numpy(np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool))

    def board_names(self, ids: Any) -> list[str | None]:
        return self.boards.column("name").take(_ids(ids)).to_pylist()

    def write_into(self, directory: Path) -> dict[str, Any]:
        return {
            "root": None if self.root is None else str(Path(self.root).absolute()),
            "pins": storage.write_table(directory, "pin_features", self.pins),
            "boards": storage.write_table(directory, "board_features", self.boards),
        }

    @classmethod
    def open(cls, directory: Path, rec: dict[str, Any], verify: str) -> "FeatureStore":
        root = rec.get("root")
        return cls(storage.open_table(directory, rec["pins"], verify),
                   storage.open_table(directory, rec["boards"], verify),
                   None if root is None else Path(root))
