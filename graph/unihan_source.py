"""Reading the Debian packages behind the Unihan dataset: the Unihan database, the radical names
and a CJK font (``unicode-data``, ``fonts-wqy-microhei``). ``graph.unihan`` builds the dataset
from what this module reads.
"""
from __future__ import annotations

import bz2
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from graph.errors import ToolkitError

__all__ = ["INSTALL_HINT", "UNIHAN_DIRS", "FONT_PATHS", "MissingDataPackageError", "find_unihan_dir", "find_font",
           "UnihanData", "read_unihan", "radical_board_name"]

INSTALL_HINT = ("install it with: sudo apt-get install unicode-data fonts-wqy-microhei "
                "(or: make real-data-deps)")

#: Directories searched for the Unihan files, UnicodeData.txt and CJKRadicals.txt (in order).
UNIHAN_DIRS: tuple[str, ...] = ("/usr/share/unicode", "/usr/share/unicode-data")
#: CJK fonts tried in order: (path, face index in a .ttc collection).
FONT_PATHS: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc", 0),
)

# Which Unihan file holds which field (kRSUnicode moved to IRGSources in Unicode 15).
_FIELDS = ("kDefinition", "kFrequency", "kPhonetic", "kRSUnicode")
_FILES = ("Unihan_Readings", "Unihan_DictionaryLikeData", "Unihan_IRGSources", "Unihan_RadicalStrokeCounts")

class MissingDataPackageError(ToolkitError, FileNotFoundError):
    """The Unihan database or a CJK font is not installed (the message says how to install it)."""


# ------------------------------------------------------------------------------------ sources
def find_unihan_dir(dirs: tuple[str, ...] | None = None) -> Path:
    """The first directory of ``dirs`` (default ``UNIHAN_DIRS``) holding the Unihan files."""
    dirs = UNIHAN_DIRS if dirs is None else dirs
    for d in dirs:
        p = Path(d)
        if all(_unihan_file(p, name) is not None for name in _FILES[:2]) \
                and any(_unihan_file(p, name) is not None for name in _FILES[2:]):
            return p
    raise MissingDataPackageError(
        f"the Unihan database (Unihan_Readings.txt[.bz2], Unihan_DictionaryLikeData.txt[.bz2], "
        f"Unihan_IRGSources.txt[.bz2]) is not in {', '.join(dirs) or '(no directory)'}: it comes "
        f"with the Debian package unicode-data; {INSTALL_HINT}")


def find_font(paths: tuple[tuple[str, int], ...] | None = None) -> tuple[Path, int]:
    """The first CJK font of ``paths`` (default ``FONT_PATHS``) that exists: (path, face index)."""
    paths = FONT_PATHS if paths is None else paths
    for p, index in paths:
        if Path(p).is_file():
            return Path(p), int(index)
    raise MissingDataPackageError(
        f"no CJK font found (looked for {', '.join(p for p, _ in paths) or 'nothing'}): it comes "
        f"with the Debian package fonts-wqy-microhei (or fonts-noto-cjk); {INSTALL_HINT}")


def _unihan_file(directory: Path, name: str) -> Path | None:
    for suffix in (".txt", ".txt.bz2"):
        p = directory / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def _open_text(path: Path):
    return bz2.open(path, "rt", encoding="utf-8") if path.suffix == ".bz2" else open(path, encoding="utf-8")


@dataclass(frozen=True)
class UnihanData:
    """The Unihan fields the dataset uses, by code point (int)."""
    definition: dict[int, str]
    frequency: dict[int, int]
    phonetic: dict[int, tuple[str, ...]]     # series numbers, as strings ("1561")
    radical: dict[int, str]                  # "85", "120'" (first kRSUnicode value)
    radical_names: dict[str, str] = field(default_factory=dict)  # "85" -> "water"
    unicode_version: str | None = None


@functools.lru_cache(maxsize=4)
def read_unihan(directory: str) -> UnihanData:
    """Parse the fields of ``_FIELDS`` from the Unihan files in ``directory`` (cached)."""
    d = Path(directory)
    values: dict[str, dict[int, str]] = {f: {} for f in _FIELDS}
    version = None
    for name in _FILES:
        path = _unihan_file(d, name)
        if path is None:
            continue
        with _open_text(path) as fh:
            for line in fh:
                if line.startswith("#"):
                    if version is None and line.startswith("# Unicode version:"):
                        version = line.split(":", 1)[1].strip()
                    continue
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) == 3 and parts[1] in values:
                    values[parts[1]].setdefault(int(parts[0][2:], 16), parts[2])
    frequency = {}
    for cp, v in values["kFrequency"].items():
        try:
            frequency[cp] = int(v.split()[0])
        except (ValueError, IndexError):
            continue
    phonetic = {}
    for cp, v in values["kPhonetic"].items():
        series = tuple(dict.fromkeys(re.sub(r"[^0-9]", "", x) for x in v.split()))
        series = tuple(s.lstrip("0") or "0" for s in series if s)
        if series:
            phonetic[cp] = series
    radical = {cp: v.split()[0].split(".")[0] for cp, v in values["kRSUnicode"].items() if v.split()}
    return UnihanData(definition=dict(values["kDefinition"]), frequency=frequency, phonetic=phonetic,
                      radical=radical, radical_names=_radical_names(d), unicode_version=version)


def _radical_names(directory: Path) -> dict[str, str]:
    """Kangxi radical number ("85") -> English name ("water"), from UnicodeData.txt (the
    KANGXI RADICAL characters U+2F00..U+2FD5 are radicals 1..214 in order); empty if absent."""
    path = directory / "UnicodeData.txt"
    if not path.is_file():
        return {}
    names = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            cp, name = line.split(";", 2)[:2]
            n = int(cp, 16) - 0x2F00 + 1
            if 1 <= n <= 214 and name.startswith("KANGXI RADICAL "):
                names[str(n)] = name[len("KANGXI RADICAL "):].lower()
    return names


def radical_board_name(radical: str, names: dict[str, str]) -> str:
    """``"radical 85 (water)"``; ``"radical 120' (silk, simplified)"``; ``"radical 85"`` unnamed."""
    number = radical.rstrip("'")
    english = names.get(number)
    if english is None:
        return f"radical {radical}"
    return f"radical {radical} ({english}{', simplified' if radical.endswith(chr(39)) else ''})"


# ------------------------------------------------------------------------------------ selection
