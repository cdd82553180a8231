"""A real development dataset from Unicode's Unihan database: ``pinclip datasets unihan``.

Built offline from two Debian packages (``sudo apt-get install unicode-data fonts-wqy-microhei``,
or ``make real-data-deps``): the Unihan database (``/usr/share/unicode/Unihan_*.txt.bz2``, plain
``.txt`` files are read too) and a CJK font (WenQuanYi Micro Hei, or Noto Sans CJK).

**Pins** are CJK characters:

* the common ones, those with a ``kFrequency`` value (about 5,000), ordered by ``kFrequency``
  (1 = most frequent) then by code point; ``max_pins=N`` takes the first N of that order;
* when N exceeds them, further characters that have a ``kDefinition``, a glyph in the font and
  a ``kRSUnicode`` value, in code point order, until N characters are taken.

A pin's ``pin_id`` is its code point (``"U+4E00"``), its ``text`` the English ``kDefinition``
(null when it has none), its ``image`` the glyph rendered in the CJK font, black on white,
centred, RGB PNG ``image_size x image_size`` (``images/U+4E00.png``).

**Boards**, three kinds (``board_id`` prefixed by the kind):

* ``radical:85``: the character's radical, from the first ``kRSUnicode`` value (the radical
  number before the ``.``; ``120'`` is the simplified form of radical 120, a board of its own
  since it looks different). Name ``"radical 85 (water)"``, the English name from the Kangxi
  radical's Unicode name (``UnicodeData.txt``, ``CJKRadicals.txt``). A visual component that the
  definition text rarely names.
* ``phonetic:1561``: each ``kPhonetic`` value (Casey's phonetic series; a trailing letter and
  ``*`` are dropped, so ``1561A*`` joins series 1561); a character can be on several.
  Name ``"phonetic series 1561"``.
* ``meaning:water``: a content word of the definitions: lowercased ``[a-z]+`` words of at least
  ``MIN_KEYWORD_LENGTH`` letters, ``U+XXXX`` references removed, ``STOP_WORDS`` dropped, a
  plural folded onto its singular when that is also a word of the definitions (``trees`` ->
  ``tree``), kept when at least ``MIN_BOARD_PINS`` of the chosen pins' definitions share it.
  A pin joins at most ``MAX_MEANING_BOARDS_PER_PIN`` of them: the first in definition order
  (the primary sense comes first). Name ``"meaning: water"``.

Boards with fewer than ``MIN_BOARD_PINS`` pins are dropped, then pins on no board (so a build
may hold fewer than ``max_pins`` pins). A ``fresh_fraction`` of the pins (rounded) is flagged
``fresh`` (cold-start pins of ``pinclip build-graph``): drawn in the order of a permutation from
``numpy.random.default_rng(seed)``, a pin is taken only while every board of it keeps at least
``MIN_WARM_PINS`` non-fresh pins; when that cannot fill the quota the rest is taken in the same
order regardless.

Files written (atomically, with ``graph.atomic.atomic_directory``):

  pins.parquet     pin_id string, text string (nullable), image string, fresh bool;
                   rows in pin order (frequency order, see above)
  boards.parquet   board_id string, name string; radical, phonetic, meaning boards, each kind
                   sorted by its key
  edges.parquet    pin_id string, board_id string; sorted by pin row, then board row
  images/U+XXXX.png
  unihan.json      the generator's manifest: parameters, sources, counts

The same arguments (and the same installed packages) give byte-identical files.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from graph.atomic import atomic_directory
from graph.errors import InputError
from graph.output_dir import OutputKind
from graph.unihan_source import (FONT_PATHS, INSTALL_HINT, UNIHAN_DIRS, MissingDataPackageError,  # noqa: F401
                                  UnihanData, find_font, find_unihan_dir, radical_board_name, read_unihan)

UNIHAN_VERSION = 1
UNIHAN_OUTPUT = OutputKind("a Unihan dataset", "pinclip datasets unihan", "unihan.json", "generator",
                           "graph.unihan")

MIN_BOARD_PINS = 3
MIN_KEYWORD_LENGTH = 3
MAX_MEANING_BOARDS_PER_PIN = 4
MIN_WARM_PINS = 2
GLYPH_SCALE = 0.8   # the glyph's em size, as a share of the image side

#: Words never made meaning boards: English function words and the vocabulary Unihan uses to
#: talk about characters rather than meanings ("variant of", "same as", "non-classical form").
STOP_WORDS: frozenset[str] = frozenset("""
a about above across after again against all almost along also although always am among an and
another any anything are around as at away back be because been before being below between both
but by can cannot could did do does doing done down during each either else etc even ever every
few for from further had has have having he her here hers him his how however if in into is it
its itself just least less like made make many may me more most much must my neither never no nor
not now of off often on once one only onto or other others our out over own per perhaps quite
rather same several shall she should since so some something such than that the their them then
there these they this those though through thus to too under until up upon us used using very
was we well were what when where whether which while who whom whose why will with within without
would yet you your
ancient archaic character characters classical component corrupted cf either erroneous etc
form forms interchangeable japanese kangxi korean kind meaning name names nonclassical non
obsolete old original phonetic pronunciation radical read reading same simplified standard
stroke strokes traditional type used variant variants various vulgar word words written
""".split())

_WORD = re.compile(r"[a-z]+")
_CODEPOINT_REF = re.compile(r"U\+[0-9A-Fa-f]{4,6}")


def _has_glyph_fn(font):
    """A predicate: does ``font`` have a glyph for a character (not the .notdef box)?"""
    from PIL import Image, ImageDraw

    def bitmap(ch: str) -> bytes:
        im = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(im).text((4, 4), ch, font=font, fill=255)
        return im.tobytes()

    notdef = {bitmap(chr(0x10FFFD)), bitmap(chr(0xE000))}
    return lambda ch: bitmap(ch) not in notdef


def select_characters(data: UnihanData, max_pins: int | None, has_glyph=None) -> list[int]:
    """Code points of the pins, in pin order (see the module docstring)."""
    common = sorted(data.frequency, key=lambda cp: (data.frequency[cp], cp))
    if max_pins is None:
        return common
    if max_pins <= len(common):
        return common[:max_pins]
    chosen, taken = list(common), set(common)
    for cp in sorted(data.definition):
        if len(chosen) >= max_pins:
            break
        if cp not in taken and cp in data.radical and (has_glyph is None or has_glyph(chr(cp))):
            chosen.append(cp)
    return chosen


def definition_words(text: str | None) -> list[str]:
    """The candidate keywords of a definition, in order of first appearance (before folding)."""
    if not text:
        return []
    words = _WORD.findall(_CODEPOINT_REF.sub(" ", text).lower())
    return list(dict.fromkeys(w for w in words if len(w) >= MIN_KEYWORD_LENGTH and w not in STOP_WORDS))


def _meaning_keywords(definitions: list[str | None]) -> list[list[str]]:
    """Per pin, the meaning keywords it joins (folded, shared by >= MIN_BOARD_PINS pins, capped)."""
    words = [definition_words(t) for t in definitions]
    vocab = {w for ws in words for w in ws}

    def fold(w: str) -> str:
        if w.endswith("ies") and w[:-3] + "y" in vocab:
            return w[:-3] + "y"
        if w.endswith("es") and w[:-2] in vocab and w[-3] in "sxz":
            return w[:-2]
        if w.endswith("s") and not w.endswith("ss") and w[:-1] in vocab:
            return w[:-1]
        return w

    folded = [list(dict.fromkeys(fold(w) for w in ws)) for ws in words]
    counts = Counter(w for ws in folded for w in ws)
    return [[w for w in ws if counts[w] >= MIN_BOARD_PINS][:MAX_MEANING_BOARDS_PER_PIN] for ws in folded]


def _number_key(s: str) -> tuple[int, str]:
    digits = s.rstrip("'")
    return (int(digits) if digits.isdigit() else 1 << 30, s)


@dataclass
class UnihanGraph:
    """The dataset in memory: pins (code points, in order), boards, edges as index arrays."""
    code_points: list[int]
    texts: list[str | None]
    board_ids: list[str]
    board_names: list[str]
    board_kinds: list[str]
    edge_pins: np.ndarray     # int64 [E], row of the pin
    edge_boards: np.ndarray   # int64 [E], row of the board
    fresh: np.ndarray         # bool [P]


def build_structure(data: UnihanData, code_points: list[int], fresh_fraction: float,
                    seed: int) -> UnihanGraph:
    """Boards, edges and fresh flags for the chosen characters (see the module docstring)."""
    members: dict[tuple[str, str], list[int]] = defaultdict(list)   # (kind, key) -> pin rows
    texts = [data.definition.get(cp) for cp in code_points]
    for row, cp in enumerate(code_points):
        if cp in data.radical:
            members[("radical", data.radical[cp])].append(row)
        for s in data.phonetic.get(cp, ()):
            members[("phonetic", s)].append(row)
    for row, kws in enumerate(_meaning_keywords(texts)):
        for w in kws:
            members[("meaning", w)].append(row)
    kinds = ("radical", "phonetic", "meaning")
    boards = sorted((k for k, rows in members.items() if len(rows) >= MIN_BOARD_PINS),
                    key=lambda k: (kinds.index(k[0]),) + (_number_key(k[1]) if k[0] != "meaning" else (0, k[1])))
    ep, eb = [], []
    for b, key in enumerate(boards):
        rows = members[key]
        ep.append(np.asarray(rows, np.int64))
        eb.append(np.full(len(rows), b, np.int64))
    ep = np.concatenate(ep) if ep else np.zeros(0, np.int64)
    eb = np.concatenate(eb) if eb else np.zeros(0, np.int64)

    # Drop pins on no board; renumber rows (order kept).
    keep = np.zeros(len(code_points), bool)
    keep[ep] = True
    new_row = np.cumsum(keep) - 1
    ep = new_row[ep]
    o = np.lexsort((eb, ep))
    ep, eb = ep[o], eb[o]
    code_points = [cp for cp, k in zip(code_points, keep) if k]
    texts = [t for t, k in zip(texts, keep) if k]
    fresh = _draw_fresh(len(code_points), ep, eb, len(boards), fresh_fraction, seed)
    return UnihanGraph(
        code_points=code_points, texts=texts,
        board_ids=[f"{kind}:{key}" for kind, key in boards],
        board_names=[radical_board_name(key, data.radical_names) if kind == "radical"
                     else f"phonetic series {key}" if kind == "phonetic" else f"meaning: {key}"
                     for kind, key in boards],
        board_kinds=[kind for kind, _ in boards], edge_pins=ep, edge_boards=eb, fresh=fresh)


def _draw_fresh(n: int, ep: np.ndarray, eb: np.ndarray, m: int, fresh_fraction: float,
                seed: int) -> np.ndarray:
    target = int(round(fresh_fraction * n))
    fresh = np.zeros(n, bool)
    if target == 0:
        return fresh
    order = np.random.default_rng(seed).permutation(n)
    warm = np.bincount(eb, minlength=m)
    starts = np.searchsorted(ep, np.arange(n + 1))   # edges are sorted by pin
    taken = 0
    for p in order:
        bs = eb[starts[p]:starts[p + 1]]
        if np.all(warm[bs] > MIN_WARM_PINS):
            fresh[p] = True
            warm[bs] -= 1
            taken += 1
            if taken == target:
                return fresh
    for p in order:   # the quota is not reachable with every board kept warm: fill in order
        if not fresh[p]:
            fresh[p] = True
            taken += 1
            if taken == target:
                break
    return fresh


# ------------------------------------------------------------------------------------ rendering
def image_path(cp: int) -> str:
    return f"images/U+{cp:04X}.png"


def render_glyph(ch: str, font, size: int):
    """The glyph of ``ch``: a PIL RGB image ``size x size``, black on white, its ink centred.

    The glyph keeps the font's size (``GLYPH_SCALE`` of the side, so small characters stay
    small); it is drawn on a larger canvas, cut to its ink box and pasted in the middle."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 2), ch, font=font, fill=255)
    box = canvas.getbbox()
    im = Image.new("RGB", (size, size), (255, 255, 255))
    if box is None:   # no ink (a blank glyph)
        return im
    ink = canvas.crop(box)
    if ink.width > size or ink.height > size:
        ink = ink.crop((max(0, (ink.width - size) // 2), max(0, (ink.height - size) // 2),
                        max(0, (ink.width - size) // 2) + min(size, ink.width),
                        max(0, (ink.height - size) // 2) + min(size, ink.height)))
    black = Image.new("RGB", ink.size, (0, 0, 0))
    im.paste(black, ((size - ink.width) // 2, (size - ink.height) // 2), mask=ink)
    return im


def _load_font(path: Path, index: int, image_size: int):
    from PIL import ImageFont
    return ImageFont.truetype(str(path), size=max(8, round(GLYPH_SCALE * image_size)), index=index)


# ------------------------------------------------------------------------------------------ API
@dataclass(frozen=True)
class UnihanSummary:
    """What ``build_unihan_dataset`` wrote."""
    out_dir: Path
    num_pins: int
    boards_per_kind: dict[str, int]
    num_edges: int
    num_fresh: int
    seconds: float

    @property
    def num_boards(self) -> int:
        return sum(self.boards_per_kind.values())


def build_unihan_dataset(out_dir: str | os.PathLike, max_pins: int | None = None,
                         image_size: int = 64, seed: int = 0, fresh_fraction: float = 0.1,
                         unihan_dir: str | os.PathLike | None = None,
                         font: str | os.PathLike | None = None,
                         progress: bool = True) -> UnihanSummary:
    """Write the Unihan dataset to ``out_dir`` (see the module docstring).

    Args:
      out_dir: the dataset directory: missing, empty, or a previous Unihan dataset (replaced
        atomically; on any error it is left as it was). Anything else is refused.
      max_pins: at most this many characters (>= 1); None: every character with a kFrequency.
      image_size: side of the square glyph images, >= 16.
      seed: integer >= 0, seeds the draw of the fresh pins.
      fresh_fraction: share of pins flagged ``fresh``, in [0, 1).
      unihan_dir, font: override the search of ``UNIHAN_DIRS`` / ``FONT_PATHS``.
      progress: a tqdm bar on stderr while rendering.

    Raises MissingDataPackageError when the database or the font is not installed.
    """
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if max_pins is not None and (not is_int(max_pins) or max_pins < 1):
        raise InputError(f"max_pins must be an integer >= 1, got {max_pins!r}")
    if not is_int(image_size) or image_size < 16:
        raise InputError(f"image_size must be an integer >= 16, got {image_size!r}")
    if not is_int(seed) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(fresh_fraction, bool) or not isinstance(fresh_fraction, (int, float)) \
            or not 0 <= fresh_fraction < 1:
        raise InputError(f"fresh_fraction must be in [0, 1), got {fresh_fraction!r}")
    t0 = time.perf_counter()
    udir = find_unihan_dir((str(unihan_dir),) if unihan_dir is not None else None)
    font_path, font_index = find_font(((str(font), 0),) if font is not None else None)

    data = read_unihan(str(udir))
    glyph_font = _load_font(font_path, font_index, image_size)
    has_glyph = _has_glyph_fn(_load_font(font_path, font_index, 48))
    code_points = select_characters(data, max_pins, has_glyph)
    st = build_structure(data, code_points, float(fresh_fraction), int(seed))
    if not st.code_points:
        raise InputError(f"max_pins={max_pins}: no character is left on a board of "
                         f">= {MIN_BOARD_PINS} pins; ask for more pins")
    pin_ids = [f"U+{cp:04X}" for cp in st.code_points]
    paths = [image_path(cp) for cp in st.code_points]
    counts = Counter(st.board_kinds)
    boards_per_kind = {k: counts.get(k, 0) for k in ("radical", "phonetic", "meaning")}

    with atomic_directory(out_dir, UNIHAN_OUTPUT) as tmp:
        (tmp / "images").mkdir()
        for cp, rel in tqdm(list(zip(st.code_points, paths)), unit="glyph", desc="rendering glyphs",
                            disable=not progress):
            render_glyph(chr(cp), glyph_font, image_size).save(tmp / rel, format="PNG", optimize=False)
        tables = {
            "pins": pa.table({"pin_id": pa.array(pin_ids, pa.string()),
                              "text": pa.array(st.texts, pa.string()),
                              "image": pa.array(paths, pa.string()),
                              "fresh": pa.array(st.fresh, pa.bool_())}),
            "boards": pa.table({"board_id": pa.array(st.board_ids, pa.string()),
                                "name": pa.array(st.board_names, pa.string())}),
            "edges": pa.table({"pin_id": pa.array([pin_ids[i] for i in st.edge_pins], pa.string()),
                               "board_id": pa.array([st.board_ids[b] for b in st.edge_boards], pa.string())}),
        }
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet")
        meta = {
            "generator": "graph.unihan", "version": UNIHAN_VERSION,
            "params": {"max_pins": max_pins, "image_size": int(image_size), "seed": int(seed),
                       "fresh_fraction": float(fresh_fraction)},
            "sources": {"unihan_dir": str(udir), "unicode_version": data.unicode_version,
                        "font": str(font_path), "font_index": font_index},
            "rules": {"min_board_pins": MIN_BOARD_PINS, "min_keyword_length": MIN_KEYWORD_LENGTH,
                      "max_meaning_boards_per_pin": MAX_MEANING_BOARDS_PER_PIN,
                      "min_warm_pins": MIN_WARM_PINS},
            "counts": {"pins": len(pin_ids), "boards": boards_per_kind, "edges": int(len(st.edge_pins)),
                       "fresh_pins": int(st.fresh.sum()),
                       "null_texts": int(sum(t is None for t in st.texts))},
        }
        (tmp / "unihan.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    return UnihanSummary(out_dir=Path(out_dir), num_pins=len(pin_ids), boards_per_kind=boards_per_kind,
                         num_edges=int(len(st.edge_pins)), num_fresh=int(st.fresh.sum()),
                         seconds=time.perf_counter() - t0)
