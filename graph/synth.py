"""The synthetic Pin-Board world: the toolkit's embedded default dataset (``pinclip synth``).

A world has 12 **topics** and 8 latent **styles**:

* a topic is an object (``shape``, a palette of colours) and a vocabulary of synonyms; captions
  are built from topic words plus filler words, and show the topic only;
* a style is a background texture and tint (stripes, dots, checker, hatching, grain, gradient,
  plain...). It shows clearly in the image but **never** in a caption or board name.

Every board has exactly one style and mixes 1-3 topics; every pin has one topic and one style,
and a pin is saved only to boards of its own style whose topics include its topic. So board
membership is decided by style + topic while captions reveal the topic only: image-text
contrastive training alone can learn the topic, and only the graph (board co-membership) tells a
model that the background style matters too.

The graph is Zipf-like: board popularity follows ``rank ** -0.8`` (board sizes), pin degrees
follow ``P(d) ~ d ** -1.9`` (most pins on 1-2 boards, a few on many), limited by the number of
compatible boards. That limit sets the edge density: with 10 pins per board, about 2.3-3.3 edges
per pin from 3,000 pins up (2.5 at 5,000 / 500), but only 1.2-1.7 below 1,000 pins, where a
(style, topic) pair has one or two boards (96 pairs; 1-3 topics per board). Every pin has at
least one edge (its *home* board, drawn by popularity, which fixes its style and topic), every
board at least one pin. Captions are noisy: synonyms, filler,
about 10% null, about 5% misleading (another topic's words). A ``fresh_fraction`` of the pins
are flagged ``fresh`` (cold-start pins): their edges are kept in ``edges.parquet`` and carry
the latest timestamps (every fresh pin's save is later than every other save).

Files written (atomically, with ``graph.atomic.atomic_directory``):

  pins.parquet          pin_id int64 (0..N-1, row order), text string (nullable), image string
                        (``images/000123.png`` relative to the directory; null with
                        ``images=False``), fresh bool
  boards.parquet        board_id int64 (0..M-1), name string (nullable; from the board's topics)
  edges.parquet         pin_id int64, board_id int64, weight float32 (>= 1, repeat saves),
                        timestamp int64 (Unix seconds); one row per (pin, board), sorted by pin
  images/NNNNNN.png     RGB image_size x image_size
  truth_pins.parquet    ground truth, for evaluation only: pin_id int64, topic int32, style
                        int32, text_topic int32 (the topic whose words the caption uses; null
                        when the caption is null; differs from ``topic`` for misleading text)
  truth_boards.parquet  ground truth: board_id int64, topics list<int32>, style int32
  synth.json            the parameters, counts, and the topic and style descriptions

The ground truth is kept out of the three dataset tables, which ``pinclip build-graph`` reads.

Determinism: the structure, the text and the timestamps come from generators derived from
``seed`` (``SeedSequence(seed, spawn_key=(k,))``) and each image from its own per-pin generator
(``graph.synth_render``), so the same arguments give byte-identical files whatever ``workers``.
"""
from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from graph import synth_render
from graph.atomic import atomic_directory
from graph.errors import InputError
from graph.output_dir import OutputKind

SYNTH_VERSION = 1
# The dataset directory as an output (graph.output_dir): synth replaces only its own worlds.
SYNTH_OUTPUT = OutputKind("a synthetic dataset", "pinclip synth", "synth.json", "generator", "graph.synth")


@dataclass(frozen=True)
class Topic:
    """A topic: what a pin shows (``shape`` in ``palette``) and what its caption says (``words``)."""
    name: str
    shape: str
    palette: tuple[tuple[int, int, int], ...]
    words: tuple[str, ...]          # synonyms used in captions
    board_phrases: tuple[str, ...]  # used in board names


@dataclass(frozen=True)
class Style:
    """A latent style: the background of the image. Never named in any text."""
    name: str
    texture: str
    words: tuple[str, ...]  # words that would describe it; no caption or board name uses them


TOPICS: tuple[Topic, ...] = (
    Topic("sun", "circle", ((250, 190, 20), (255, 140, 0), (235, 205, 40)),
          ("sun", "sunshine", "solar disc", "sunny sky"), ("sunny things", "sunshine", "summer sun")),
    Topic("gift", "square", ((200, 30, 40), (30, 90, 200), (20, 140, 60)),
          ("gift box", "present", "parcel", "package"), ("gift ideas", "presents", "wrapping")),
    Topic("mountain", "triangle", ((110, 85, 65), (70, 110, 75), (105, 105, 120)),
          ("mountain", "peak", "summit", "alps"), ("mountain trips", "hiking", "peaks")),
    Topic("star", "star", ((255, 205, 0), (230, 150, 20), (245, 235, 110)),
          ("star", "starry", "twinkle", "shooting star"), ("starry nights", "stars", "wish upon a star")),
    Topic("donut", "ring", ((185, 105, 55), (235, 110, 165), (115, 65, 35)),
          ("donut", "doughnut", "glazed ring", "bagel"), ("donut love", "bakery", "sweet rings")),
    Topic("first aid", "cross", ((200, 0, 0), (0, 150, 70), (0, 105, 200)),
          ("first aid", "medic", "health kit", "pharmacy"), ("health tips", "first aid", "wellness")),
    Topic("gem", "diamond", ((0, 165, 200), (120, 40, 200), (0, 115, 155)),
          ("gem", "jewel", "diamond ring", "crystal"), ("jewelry", "gems", "sparkle")),
    Topic("honey", "hexagon", ((225, 155, 0), (195, 115, 0), (245, 185, 45)),
          ("honeycomb", "beehive", "honey", "bee"), ("bee & honey", "beekeeping", "honeycomb")),
    Topic("love", "heart", ((215, 25, 75), (245, 75, 115), (175, 0, 40)),
          ("love", "heart", "valentine", "romance"), ("valentines", "love notes", "romance")),
    Topic("chocolate", "bar", ((90, 50, 25), (60, 35, 20), (130, 80, 40)),
          ("chocolate bar", "candy bar", "cocoa", "snack"), ("snacks", "chocolate", "sweet treats")),
    Topic("direction", "arrow", ((40, 40, 40), (20, 60, 140), (140, 20, 20)),
          ("arrow", "direction", "wayfinding", "signpost"), ("directions", "wayfinding", "signs")),
    Topic("moon", "moon", ((80, 80, 140), (210, 175, 40), (55, 55, 90)),
          ("moon", "crescent", "moonlight", "lunar"), ("moon phases", "night sky", "lunar")),
)

STYLES: tuple[Style, ...] = (
    Style("horizontal stripes", "hstripes", ("stripes", "striped", "stripe", "horizontal", "lines")),
    Style("vertical stripes", "vstripes", ("stripes", "striped", "stripe", "vertical", "pinstripe")),
    Style("polka dots", "dots", ("dots", "dotted", "polka", "spots", "spotted")),
    Style("checkerboard", "checker", ("checker", "checkered", "checkerboard", "plaid", "gingham")),
    Style("diagonal hatching", "hatch", ("diagonal", "hatch", "hatched", "hatching")),
    Style("film grain", "grain", ("grain", "grainy", "noise", "noisy", "speckled")),
    Style("gradient", "gradient", ("gradient", "ombre", "fade", "faded")),
    Style("plain", "plain", ("plain", "solid", "blank", "minimal")),
)
assert tuple(s.texture for s in STYLES) == synth_render.TEXTURES
assert all(t.shape in synth_render.SHAPES for t in TOPICS)

#: Every word describing a style (or a background colour): none appears in captions or board names.
STYLE_WORDS: frozenset[str] = frozenset(
    w for s in STYLES for w in s.words + tuple(s.name.split())
) | frozenset({"background", "texture", "pattern", "pastel", "tint", "blue", "pink", "mint",
               "lavender", "peach", "beige", "grey", "gray", "yellow"})

ADJECTIVES = ("cute", "lovely", "amazing", "simple", "classic", "tiny", "cozy", "little", "best",
              "beautiful", "fun", "easy")
FILLERS = ("idea", "ideas", "inspo", "for the weekend", "diy", "aesthetic", "photo", "my favorite",
           "art", "decor", "collection", "goals", "vibes", "today", "to save")
BOARD_AFFIXES = ("", "", "", "my ", "best ", "")
BOARD_SUFFIXES = ("", "", "", " board", " ideas", " collection")

# Structure parameters.
BOARD_POPULARITY_EXPONENT = 0.8      # popularity of board of rank r ~ r ** -0.8
STYLE_POPULARITY_EXPONENT = 0.5      # share of boards of the style of rank r ~ r ** -0.5
TOPIC_POPULARITY_EXPONENT = 0.5      # likewise for topics
PIN_DEGREE_EXPONENT = 1.9            # P(degree = d) ~ d ** -1.9, d in 1..MAX_PIN_DEGREE
MAX_PIN_DEGREE = 64
BOARD_TOPIC_COUNTS = (1, 2, 3)
BOARD_TOPIC_PROBS = (0.3, 0.4, 0.3)
NULL_TEXT_PROB = 0.10
MISLEADING_TEXT_PROB = 0.05
NULL_BOARD_NAME_PROB = 0.10
T0 = 1_600_000_000                   # timestamps: Unix seconds in [T0, T0 + SPAN]
SPAN = 3 * 365 * 86_400
_STRUCTURE, _TEXT, _TIME = 0, 1, 2   # spawn keys of the generators


@dataclass(frozen=True)
class SynthSummary:
    """What ``synthesize`` wrote."""
    out_dir: Path
    num_pins: int
    num_boards: int
    num_edges: int
    num_topics: int
    num_styles: int
    seconds: float


@dataclass(frozen=True)
class SynthTruth:
    """The ground truth of a synthetic world (``read_truth``), indexed by pin / board id.

    pin_topic, pin_style, pin_text_topic (-1 where the caption is null): int32 ``[num_pins]``;
    board_style int32 ``[num_boards]``; board_topics: list of int32 arrays; params: synth.json.
    """
    pin_topic: np.ndarray
    pin_style: np.ndarray
    pin_text_topic: np.ndarray
    board_style: np.ndarray
    board_topics: list[np.ndarray]
    params: dict


def read_truth(dataset_dir: str | os.PathLike) -> SynthTruth:
    """Read ``truth_pins.parquet``, ``truth_boards.parquet`` and ``synth.json`` of a world."""
    d = Path(dataset_dir)
    tp = pq.read_table(d / "truth_pins.parquet")
    tb = pq.read_table(d / "truth_boards.parquet")
    pin_order = np.argsort(tp.column("pin_id").to_numpy())
    board_order = np.argsort(tb.column("board_id").to_numpy())
    text_topic = tp.column("text_topic").fill_null(-1).to_numpy().astype(np.int32)
    topics = tb.column("topics").to_pylist()
    return SynthTruth(
        pin_topic=tp.column("topic").to_numpy()[pin_order].astype(np.int32),
        pin_style=tp.column("style").to_numpy()[pin_order].astype(np.int32),
        pin_text_topic=text_topic[pin_order],
        board_style=tb.column("style").to_numpy()[board_order].astype(np.int32),
        board_topics=[np.asarray(topics[i], np.int32) for i in board_order],
        params=json.loads((d / "synth.json").read_text()),
    )


# --------------------------------------------------------------------------------- validation
def _check_args(num_pins, num_boards, seed, image_size, fresh_fraction, workers) -> None:
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(num_pins) or num_pins < 1:
        raise InputError(f"num_pins must be an integer >= 1, got {num_pins!r}")
    if not is_int(num_boards) or num_boards < 1:
        raise InputError(f"num_boards must be an integer >= 1, got {num_boards!r}")
    if num_boards > num_pins:
        raise InputError(f"num_boards ({num_boards}) must be <= num_pins ({num_pins}): every "
                         "board needs at least one pin")
    if not is_int(seed) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if not is_int(image_size) or image_size < 16:
        raise InputError(f"image_size must be an integer >= 16, got {image_size!r}")
    if not isinstance(fresh_fraction, (int, float)) or isinstance(fresh_fraction, bool) \
            or not 0 <= fresh_fraction < 1:
        raise InputError(f"fresh_fraction must be in [0, 1), got {fresh_fraction!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise InputError(f"workers must be an integer >= 1 or None, got {workers!r}")


def _rng(seed: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


# ---------------------------------------------------------------------------------- structure
@dataclass
class _Structure:
    board_style: np.ndarray   # int32 [M]
    board_topics: list        # list of sorted int arrays
    pin_topic: np.ndarray     # int32 [N]
    pin_style: np.ndarray     # int32 [N]
    edge_pins: np.ndarray     # int64 [E], sorted by (pin, board)
    edge_boards: np.ndarray   # int64 [E]
    fresh: np.ndarray         # bool [N]


def _draw_structure(num_pins: int, num_boards: int, fresh_fraction: float,
                    rng: np.random.Generator) -> _Structure:
    n, m, nt, ns = num_pins, num_boards, len(TOPICS), len(STYLES)
    # Boards: a style, 1-3 topics, a Zipf popularity over randomly permuted ranks.
    style_pop = (rng.permutation(ns) + 1.0) ** -STYLE_POPULARITY_EXPONENT
    topic_pop = (rng.permutation(nt) + 1.0) ** -TOPIC_POPULARITY_EXPONENT
    board_style = rng.choice(ns, m, p=style_pop / style_pop.sum()).astype(np.int32)
    k = rng.choice(BOARD_TOPIC_COUNTS, size=m, p=BOARD_TOPIC_PROBS)
    board_topics = [np.sort(rng.choice(nt, int(kk), replace=False, p=topic_pop / topic_pop.sum()))
                    for kk in k]
    popularity = (rng.permutation(m) + 1.0) ** -BOARD_POPULARITY_EXPONENT
    popularity /= popularity.sum()

    # Home boards: the first M pins of a random order cover every board once; the rest draw
    # by popularity. The home board fixes the pin's style and (one of its) topic.
    order = rng.permutation(n)
    home = np.empty(n, np.int64)
    home[order[:m]] = np.arange(m)
    home[order[m:]] = rng.choice(m, n - m, p=popularity)
    pick = rng.random(n)
    pin_topic = np.array([board_topics[b][int(u * len(board_topics[b]))] for b, u in zip(home, pick)],
                         dtype=np.int32)
    pin_style = board_style[home]

    # Degrees: discrete power law, at most the number of compatible boards.
    dmax = min(MAX_PIN_DEGREE, m)
    d = np.arange(1, dmax + 1, dtype=np.float64)
    pd = d ** -PIN_DEGREE_EXPONENT
    degree = rng.choice(np.arange(1, dmax + 1), size=n, p=pd / pd.sum())

    # Extra boards: among the boards of the pin's style holding its topic (home excluded),
    # without replacement, by popularity (Gumbel top-k, one block of pins at a time).
    edge_pins, edge_boards = [np.arange(n, dtype=np.int64)], [home]
    board_has = np.zeros((m, nt), bool)
    for b, ts in enumerate(board_topics):
        board_has[b, ts] = True
    group = pin_style.astype(np.int64) * nt + pin_topic
    log_pop = np.log(popularity)
    for g in np.unique(group):
        s, t = divmod(int(g), nt)
        compat = np.flatnonzero((board_style == s) & board_has[:, t])
        pins_g = np.flatnonzero(group == g)
        extra = np.minimum(degree[pins_g] - 1, len(compat) - 1)
        pins_g, extra = pins_g[extra > 0], extra[extra > 0]
        if len(pins_g) == 0:
            continue
        col = np.searchsorted(compat, home[pins_g])  # the home board's column in compat
        rows_per_block = max(1, (1 << 22) // len(compat))
        for lo in range(0, len(pins_g), rows_per_block):
            p_blk, e_blk, c_blk = (a[lo:lo + rows_per_block] for a in (pins_g, extra, col))
            keys = log_pop[compat][None, :] + rng.gumbel(size=(len(p_blk), len(compat)))
            keys[np.arange(len(p_blk)), c_blk] = -np.inf
            kmax = int(e_blk.max())
            top = np.argsort(-keys, axis=1, kind="stable")[:, :kmax]
            take = np.arange(kmax)[None, :] < e_blk[:, None]
            edge_pins.append(np.broadcast_to(p_blk[:, None], top.shape)[take].astype(np.int64))
            edge_boards.append(compat[top[take]].astype(np.int64))
    ep, eb = np.concatenate(edge_pins), np.concatenate(edge_boards)
    o = np.lexsort((eb, ep))
    ep, eb = ep[o], eb[o]

    # Fresh pins: preferably not among the pins that guarantee a board its first pin, so that
    # boards keep warm pins when the fresh pins' edges are held out.
    n_fresh = int(round(fresh_fraction * n))
    fresh = np.zeros(n, bool)
    if n_fresh:
        pool = order[m:]
        if len(pool) >= n_fresh:
            chosen = rng.choice(pool, n_fresh, replace=False)
        else:
            chosen = np.concatenate([pool, rng.choice(order[:m], n_fresh - len(pool), replace=False)])
        fresh[chosen] = True
    return _Structure(board_style, board_topics, pin_topic, pin_style, ep, eb, fresh)


def _draw_times(st: _Structure, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Edge weights (float32 >= 1) and timestamps (int64): fresh pins' saves come last."""
    n, e = len(st.pin_topic), len(st.edge_pins)
    created = np.where(st.fresh, rng.uniform(0.90, 0.97, n), rng.uniform(0.0, 0.80, n)) * SPAN
    delay = rng.exponential(np.where(st.fresh[st.edge_pins], 0.01, 0.05) * SPAN)
    limit = np.where(st.fresh[st.edge_pins], SPAN, 0.9 * SPAN - 1)
    ts = T0 + np.minimum(created[st.edge_pins] + delay, limit).astype(np.int64)
    weights = np.minimum(rng.geometric(0.75, e), 5).astype(np.float32)
    return weights, ts


# --------------------------------------------------------------------------------------- text
def _caption(topic: int, rng: np.random.Generator) -> str:
    words = TOPICS[topic].words
    parts = [words[int(rng.integers(len(words)))]]
    if rng.random() < 0.3:
        other = words[int(rng.integers(len(words)))]
        if other != parts[0]:
            parts.append(other)
    if rng.random() < 0.5:
        parts.insert(0, ADJECTIVES[int(rng.integers(len(ADJECTIVES)))])
    if rng.random() < 0.6:
        parts.append(FILLERS[int(rng.integers(len(FILLERS)))])
    return " ".join(parts)


def _draw_texts(st: _Structure, rng: np.random.Generator) -> tuple[list, np.ndarray, list]:
    """Captions (None for null), the topic of each caption's words (-1: null), board names."""
    n, nt = len(st.pin_topic), len(TOPICS)
    u = rng.random(n)
    texts, text_topic = [], np.full(n, -1, np.int32)
    for i in range(n):
        if u[i] < NULL_TEXT_PROB:
            texts.append(None)
            continue
        t = int(st.pin_topic[i])
        if u[i] < NULL_TEXT_PROB + MISLEADING_TEXT_PROB:
            t = (t + 1 + int(rng.integers(nt - 1))) % nt  # any other topic
        text_topic[i] = t
        texts.append(_caption(t, rng))
    names = []
    for ts in st.board_topics:
        if rng.random() < NULL_BOARD_NAME_PROB:
            names.append(None)
            continue
        phrases = [TOPICS[t].board_phrases[int(rng.integers(3))] for t in rng.permutation(ts)]
        body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " & " + phrases[-1]
        names.append(BOARD_AFFIXES[int(rng.integers(len(BOARD_AFFIXES)))] + body
                     + BOARD_SUFFIXES[int(rng.integers(len(BOARD_SUFFIXES)))])
    return texts, text_topic, names


# ------------------------------------------------------------------------------------- images
def image_path(pin: int, num_pins: int) -> str:
    """Relative path of pin ``pin``'s image: ``images/000123.png`` (at least 6 digits)."""
    return f"images/{pin:0{max(6, len(str(num_pins - 1)))}d}.png"


def _render_images(root: Path, st: _Structure, seed: int, image_size: int, workers: int,
                   progress: bool) -> list[str]:
    n = len(st.pin_topic)
    (root / "images").mkdir()
    paths = [image_path(i, n) for i in range(n)]
    items = [(i, paths[i], int(st.pin_topic[i]), int(st.pin_style[i])) for i in range(n)]
    shapes = [t.shape for t in TOPICS]
    palettes = [t.palette for t in TOPICS]
    chunk = max(16, min(512, math.ceil(n / (workers * 8))))
    chunks = [items[lo:lo + chunk] for lo in range(0, n, chunk)]
    with tqdm(total=n, unit="img", desc="rendering pins", disable=not progress) as bar:
        if workers == 1 or len(chunks) == 1:
            for c in chunks:
                bar.update(synth_render.render_chunk(str(root), c, seed, shapes, palettes, image_size))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
                futures = [pool.submit(synth_render.render_chunk, str(root), c, seed, shapes,
                                       palettes, image_size) for c in chunks]
                try:
                    for f in as_completed(futures):
                        bar.update(f.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    return paths


# ---------------------------------------------------------------------------------------- API
def synthesize(out_dir: str | os.PathLike, num_pins: int, num_boards: int, seed: int,
               image_size: int = 64, images: bool = True, fresh_fraction: float = 0.1,
               workers: int | None = None, progress: bool = True) -> SynthSummary:
    """Write a synthetic Pin-Board world to ``out_dir`` (see the module docstring for the files).

    Args:
      out_dir: the dataset directory; created, or an existing directory replaced atomically
        (on any error it is left as it was).
      num_pins, num_boards: sizes, ``1 <= num_boards <= num_pins``.
      seed: integer >= 0; the same arguments give byte-identical files.
      image_size: side of the square RGB images, >= 16.
      images: False writes ``image`` = null and renders nothing.
      fresh_fraction: share of pins flagged ``fresh`` (cold-start), in [0, 1).
      workers: image rendering processes (default: the CPUs this process may use).
      progress: a tqdm bar on stderr while rendering.
    """
    _check_args(num_pins, num_boards, seed, image_size, fresh_fraction, workers)
    num_pins, num_boards, seed, image_size = int(num_pins), int(num_boards), int(seed), int(image_size)
    fresh_fraction = float(fresh_fraction)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    t0 = time.perf_counter()

    st = _draw_structure(num_pins, num_boards, fresh_fraction, _rng(seed, _STRUCTURE))
    weights, timestamps = _draw_times(st, _rng(seed, _TIME))
    texts, text_topic, names = _draw_texts(st, _rng(seed, _TEXT))
    pin_ids = np.arange(num_pins, dtype=np.int64)
    board_ids = np.arange(num_boards, dtype=np.int64)

    with atomic_directory(out_dir, SYNTH_OUTPUT) as tmp:
        paths = (_render_images(tmp, st, seed, image_size, workers, progress) if images
                 else [None] * num_pins)
        tables = {
            "pins": pa.table({"pin_id": pa.array(pin_ids, pa.int64()),
                              "text": pa.array(texts, pa.string()),
                              "image": pa.array(paths, pa.string()),
                              "fresh": pa.array(st.fresh, pa.bool_())}),
            "boards": pa.table({"board_id": pa.array(board_ids, pa.int64()),
                                "name": pa.array(names, pa.string())}),
            "edges": pa.table({"pin_id": pa.array(st.edge_pins, pa.int64()),
                               "board_id": pa.array(st.edge_boards, pa.int64()),
                               "weight": pa.array(weights, pa.float32()),
                               "timestamp": pa.array(timestamps, pa.int64())}),
            "truth_pins": pa.table({"pin_id": pa.array(pin_ids, pa.int64()),
                                    "topic": pa.array(st.pin_topic, pa.int32()),
                                    "style": pa.array(st.pin_style, pa.int32()),
                                    "text_topic": pa.array(text_topic, pa.int32(), mask=text_topic < 0)}),
            "truth_boards": pa.table({"board_id": pa.array(board_ids, pa.int64()),
                                      "topics": pa.array([t.tolist() for t in st.board_topics],
                                                         pa.list_(pa.int32())),
                                      "style": pa.array(st.board_style, pa.int32())}),
        }
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet")
        meta = {
            "generator": "graph.synth", "version": SYNTH_VERSION,
            "params": {"num_pins": num_pins, "num_boards": num_boards, "seed": seed,
                       "image_size": image_size, "images": bool(images),
                       "fresh_fraction": fresh_fraction},
            "counts": {"pins": num_pins, "boards": num_boards, "edges": int(len(st.edge_pins)),
                       "fresh_pins": int(st.fresh.sum()), "null_texts": int(sum(t is None for t in texts)),
                       "misleading_texts": int(((text_topic >= 0) & (text_topic != st.pin_topic)).sum()),
                       "null_board_names": int(sum(x is None for x in names))},
            "topics": [{"id": i, "name": t.name, "shape": t.shape, "palette": [list(c) for c in t.palette],
                        "words": list(t.words)} for i, t in enumerate(TOPICS)],
            "styles": [{"id": i, "name": s.name, "texture": s.texture} for i, s in enumerate(STYLES)],
            "timestamps": {"start": T0, "end": T0 + SPAN},
        }
        (tmp / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")

    return SynthSummary(out_dir=Path(out_dir), num_pins=num_pins, num_boards=num_boards,
                        num_edges=int(len(st.edge_pins)), num_topics=len(TOPICS),
                        num_styles=len(STYLES), seconds=time.perf_counter() - t0)
