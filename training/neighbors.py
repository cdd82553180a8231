"""One pin's neighborhoods side by side: the graph's and each run's (``pinclip neighbors``).

For one query pin (the dataset's pin id, int or string) :func:`pin_neighborhoods` gathers

* its **graph neighborhood**: the PinSage top-T importance neighbors with their visit counts,
  from ``sampling.build_sampler`` with the ``pinsage_default`` sampler config (seeded) on the
  training graph (held-out and cold-start edges excluded: ``exclude_splits``); a cold-start
  query has no training edge, so its graph neighborhood is empty;
* its **k nearest neighbors in each run's pin embedding** (``fused`` for a training run; a
  baseline directory's first of ``PIN_EMBEDDING_ORDER``), by cosine similarity, the query
  itself left out. A run is opened with ``training.evaluation.run_eval.load_method``, which
  embeds every pin into ``RUN_DIR/embeddings`` first when that is missing or stale, exactly as
  ``pinclip evaluate`` does;

and marks every neighbor that is a **board mate** of the query (shares a board with it in the
graph, all edges: held-out board mates count) and every **cold-start** pin. All directories must
use the same graph store (same ``manifest.json`` bytes), else :class:`NeighborsError` naming them.

:func:`neighbors_html` renders the result as one self-contained HTML page (thumbnails inline as
base64 PNG ``data:`` URIs, no external resource) and :func:`write_html` writes it atomically,
refusing to replace an existing file that is not an HTML page.

    from training.neighbors import pin_neighborhoods, neighbors_html, write_html
    res = pin_neighborhoods(["runs/a", "runs/b"], pin=17, k=8)
    write_html("pin17.html", neighbors_html(res))
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from graph import PinBoardGraph
from graph.atomic import atomic_write_bytes
from graph.errors import InputError
from graph.features import ImagePathError
from pinclip.transforms import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image
from sampling import build_sampler, load_sampler_config
from training.checkpoint import graph_identity, read_graph_identity
from training.config import load_train_config
from training.evaluation.run_eval import load_method
from training.evaluation.summary import PIN_EMBEDDING_ORDER
from training.notebook_utils.samplers import board_mate_sets

__all__ = ["NeighborsError", "GRAPH_SAMPLER", "pin_neighborhoods", "format_neighborhoods", "neighbors_html",
           "check_html_output", "write_html"]

GRAPH_SAMPLER = "pinsage_default"      # the sampler config preset of the graph neighborhood
THUMBNAIL_PX = 128


class NeighborsError(InputError):
    """An unknown pin, directories on different graph stores, or an output that is not HTML."""


# ------------------------------------------------------------------------------ gathering
def _store_of(path: Path) -> Path | None:
    """The graph store a run or baseline directory uses (as ``load_method`` finds it), or None."""
    meta = path / "method.json"
    if meta.is_file():
        try:
            return Path(json.loads(meta.read_text())["graph"])
        except (ValueError, KeyError, TypeError):
            return None
    if (path / "config.yaml").is_file():
        cfg = load_train_config(path / "config.yaml", check_devices=False)
        return Path(cfg.data.graph) if cfg.data.graph else path / "graph"
    return None


def _store_sha(path: Path) -> tuple[str | None, str]:
    """(manifest sha256, store path) of a directory's graph store, before anything is embedded:
    the store's own manifest when it exists, else the identity the run recorded."""
    store = _store_of(path)
    if store is not None and (store / "manifest.json").is_file():
        ident = graph_identity(store)
        return ident["manifest_sha256"], ident["graph"]
    recorded = read_graph_identity(path) if (path / "config.yaml").is_file() else None
    if recorded:
        return recorded.get("manifest_sha256"), str(recorded.get("graph"))
    return None, str(store)


def _check_same_store(stores: Sequence[tuple[Path, str | None, str]]) -> None:
    shas = {sha for _, sha, _ in stores if sha is not None}
    if len(shas) > 1:
        listing = "; ".join(f"{d} -> {g} (manifest sha256 {(sha or '?')[:12]})" for d, sha, g in stores)
        raise NeighborsError(f"the directories use different graph stores, so their pins cannot be compared: "
                             f"{listing}")


def _resolve_pin(g: Any, pin: Any, where: str) -> int:
    try:
        return int(g.pin_index([pin])[0])
    except (KeyError, ValueError, TypeError):
        raise NeighborsError(f"--pin {pin}: no such pin in the graph store {where} ({g.num_pins:,} pins)") from None


def _describe(g: Any, rows: Sequence[int]) -> list[dict[str, Any]]:
    """{"index", "pin_id", "text", "image"} of internal pins ``rows`` (text / image None when unknown)."""
    rows = [int(r) for r in rows]
    if not rows:
        return []
    ext = g.external_pin_ids(np.asarray(rows, dtype=np.int64))
    feats = getattr(g, "features", None)
    texts: list = [None] * len(rows)
    images: list = [None] * len(rows)
    if feats is not None:
        texts = feats.pin_text(np.asarray(rows, dtype=np.int64))
        for i, r in enumerate(rows):
            try:
                p = feats.pin_image_paths([r])[0]
                images[i] = None if p is None else str(p)
            except ImagePathError:
                images[i] = None
    return [{"index": r, "pin_id": e, "text": t, "image": im} for r, e, t, im in zip(rows, ext, texts, images)]


def _nearest(emb: torch.Tensor, q: int, k: int, supported: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows int64 [<=k], cosine scores float64) of the ``k`` nearest pins to row ``q`` of
    ``emb`` (float [P, D]), ``q`` itself, unsupported and non-finite rows left out; ties by
    smaller row."""
    e = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(e, axis=1)
    ok = np.isfinite(e).all(axis=1) & (norms > 0)
    if supported is not None:
        ok &= np.asarray(torch.as_tensor(supported).cpu().numpy(), dtype=bool)
    if not ok[q]:
        return np.zeros(0, np.int64), np.zeros(0)
    scores = (e @ e[q]).astype(np.float64) / np.where(norms > 0, norms, 1.0) / norms[q]
    ok[q] = False
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    s = scores[cand]
    if cand.size > k:
        part = np.argpartition(-s, k - 1)[:k]
        # every candidate tied with the k-th best joins, so the tie break is by row, not by chance
        part = np.flatnonzero(s >= s[part].min())
        cand, s = cand[part], s[part]
    order = np.lexsort((cand, -s))[:k]
    return cand[order].astype(np.int64), s[order]


def pin_neighborhoods(run_dirs: Sequence[str | os.PathLike], pin: Any, k: int = 10, *,
                      graph_neighbors: int | None = None, seed: int = 0, device: str = "auto",
                      progress: bool = True, log=print, allow_changed_graph: bool = False) -> dict[str, Any]:
    """The graph neighborhood of ``pin`` (a dataset pin id) and its ``k`` nearest neighbors in
    each of ``run_dirs`` (training runs or baseline directories); see the module docstring.

    graph_neighbors: T of the PinSage neighborhood (default ``k``); seed: the sampler's seed.
    Returns::

        {"pin": {"pin_id", "index", "text", "image", "cold_start": bool, "boards": [board ids],
                 "board_mates": int},
         "graph": store path, "graph_manifest_sha256": str, "k": k,
         "graph_neighborhood": {"sampler": "pinsage_default", "seed", "exclude_splits": [...],
                                "num_random_walks", "total_visits": int,
                                "neighbors": [{"pin_id", "index", "text", "image", "visits",
                                              "board_mate", "cold_start"}, ...]},
         "runs": [{"dir", "method", "kind", "step", "embedding": "fused",
                   "neighbors": [{"pin_id", "index", "text", "image", "score", "board_mate",
                                  "cold_start"}, ...]}, ...]}

    Raises :class:`NeighborsError` for an unknown pin or directories on different graph stores.
    """
    if int(k) < 1:
        raise NeighborsError(f"k={k}: must be >= 1")
    if not run_dirs:
        raise NeighborsError("give at least one run directory")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise NeighborsError(f"{d}: no such directory")
    # Checked before anything is embedded: a refused mix costs no embedding pass.
    _check_same_store([(d, *_store_sha(d)) for d in dirs])
    methods = []
    for d in dirs:
        methods.append(load_method(d, device=device, progress=progress, log=log,
                                   allow_changed_graph=allow_changed_graph))
    _check_same_store([(d, (m.get("graph_identity") or {}).get("manifest_sha256"), m["graph_path"])
                       for d, m in zip(dirs, methods)])
    g: PinBoardGraph = methods[0]["graph"]
    graph_path = methods[0]["graph_path"]
    q = _resolve_pin(g, pin, graph_path)

    cold = (g.splits.is_cold_start(g.num_pins).numpy() if getattr(g, "splits", None) is not None
            else np.zeros(g.num_pins, dtype=bool))
    mates = board_mate_sets(g, [q])[0]

    def marks(rows: Sequence[int]) -> list[dict[str, bool]]:
        return [{"board_mate": int(r) in mates, "cold_start": bool(cold[int(r)])} for r in rows]

    # The graph neighborhood: PinSage on the training graph, seeded.
    T = int(graph_neighbors or k)
    cfg = load_sampler_config(GRAPH_SAMPLER, {"seed": int(seed), "device": "cpu", "pinsage.num_neighbors": T})
    sampler = build_sampler(cfg, g)
    nb = sampler.sample(torch.tensor([q], dtype=torch.int64), generator=torch.Generator().manual_seed(int(seed)))
    rows = [int(r) for r in nb.neighbors[0].tolist() if r >= 0]
    visits = [int(round(float(w))) for w in nb.weights[0, :len(rows)].tolist()]
    graph_nb = [{**d, "visits": v, **m} for d, v, m in zip(_describe(g, rows), visits, marks(rows))]

    runs = []
    for d, m in zip(dirs, methods):
        name = next((n for n in PIN_EMBEDDING_ORDER if n in m["emb"]), None)
        if name is None:
            raise NeighborsError(f"{d}: no pin embedding (expected one of {', '.join(PIN_EMBEDDING_ORDER)})")
        near, scores = _nearest(m["emb"][name], q, int(k), m.get("supported"))
        runs.append({"dir": str(d), "method": m["method"], "kind": m["kind"], "step": m["step"], "embedding": name,
                     "neighbors": [{**desc, "score": float(s), **mk} for desc, s, mk in
                                   zip(_describe(g, near), scores, marks(near))]})
    query = _describe(g, [q])[0]
    boards = g.boards_of(q).tolist()
    query.update({"cold_start": bool(cold[q]), "boards": g.external_board_ids(np.asarray(boards, dtype=np.int64))
                  if boards else [], "board_mates": len(mates)})
    return {"pin": query, "graph": graph_path,
            "graph_manifest_sha256": (methods[0].get("graph_identity") or {}).get("manifest_sha256"), "k": int(k),
            "graph_neighborhood": {"sampler": GRAPH_SAMPLER, "seed": int(seed),
                                   "exclude_splits": list(cfg.exclude_splits),
                                   "num_random_walks": cfg.pinsage.num_random_walks,
                                   "total_visits": int(nb.total_visits[0]), "neighbors": graph_nb},
            "runs": runs}


# ------------------------------------------------------------------------------ text
def _marks_text(n: dict) -> str:
    return ("B" if n.get("board_mate") else "-") + ("C" if n.get("cold_start") else "-")


def _clip(text: Any, width: int) -> str:
    if text is None:
        return "(no caption)"
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[:width - 1] + "…"


def format_neighborhoods(res: dict[str, Any], width: int = 50) -> str:
    """The result of :func:`pin_neighborhoods` as plain-text tables (``pinclip neighbors``)."""
    p = res["pin"]
    lines = [f"pin {p['pin_id']}" + (" (cold-start)" if p["cold_start"] else "") +
             f": {_clip(p['text'], width)}",
             f"  {len(p['boards'])} board(s), {p['board_mates']} board mate(s); graph {res['graph']}", ""]
    gn = res["graph_neighborhood"]
    lines.append(f"graph neighborhood: PinSage ({gn['sampler']}, seed {gn['seed']}, {gn['num_random_walks']} walks, "
                 f"without {', '.join(gn['exclude_splits']) or 'no'} edges; {gn['total_visits']} visits)")
    if not gn["neighbors"]:
        lines.append("  (no neighbors: the pin has no training edge" +
                     (", it is a cold-start pin)" if p["cold_start"] else ")"))
    for i, n in enumerate(gn["neighbors"], 1):
        lines.append(f"  {i:>3}  {str(n['pin_id']):<14} {n['visits']:>7} visits  {_marks_text(n)}  "
                     f"{_clip(n['text'], width)}")
    for r in res["runs"]:
        step = f", step {r['step']}" if r["step"] is not None else ""
        lines += ["", f"{r['method']} ({r['kind']}{step}, {r['embedding']} embedding): {r['dir']}"]
        if not r["neighbors"]:
            lines.append("  (no neighbors: the pin has no usable embedding row here)")
        for i, n in enumerate(r["neighbors"], 1):
            lines.append(f"  {i:>3}  {str(n['pin_id']):<14} {n['score']:>7.3f} cosine  {_marks_text(n)}  "
                         f"{_clip(n['text'], width)}")
    lines += ["", "marks: B = board mate of the query (shares a board, all edges), C = cold-start pin"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ HTML
def _thumbnail(path: str | None, size: int, max_pixels: int) -> str | None:
    """A ``data:image/png;base64,...`` URI of the image at ``path`` shrunk to ``size`` px, or None."""
    if path is None:
        return None
    try:
        img = open_image(path, max_pixels).convert("RGB")
    except (ImageReadError, OSError, ValueError):
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(n: dict, label: str, size: int, max_pixels: int, css: str = "") -> str:
    uri = _thumbnail(n.get("image"), size, max_pixels)
    classes = " ".join(c for c in ("pin", css, "mate" if n.get("board_mate") else "",
                                   "cold" if n.get("cold_start") else "") if c)
    tags = "".join(f'<span class="tag {c}">{t}</span>' for c, t, on in
                   (("mate", "board mate", n.get("board_mate")), ("cold", "cold start", n.get("cold_start"))) if on)
    pic = (f'<img src="{uri}" alt="pin {html.escape(str(n["pin_id"]))}" width="{size}" height="{size}">' if uri
           else f'<div class="noimg" style="width:{size}px;height:{size}px">no image</div>')
    return (f'<figure class="{classes}">{pic}<figcaption><b>{html.escape(str(n["pin_id"]))}</b> '
            f'{html.escape(label)}<br>{tags}<span class="text">{html.escape(_clip(n.get("text"), 80))}</span>'
            f'</figcaption></figure>')


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.05em;margin:1.2em 0 .3em}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;width:%(w)dpx;border:3px solid #ddd;padding:3px;border-radius:4px;background:#fff}
figure.mate{border-color:#2a9d4b}figure.query{border-color:#222}
figure img,.noimg{display:block;object-fit:contain;background:#f3f3f3}
.noimg{display:flex;align-items:center;justify-content:center;color:#888;font-size:.8em}
figcaption{font-size:.75em;line-height:1.3;margin-top:3px;word-wrap:break-word}
.tag{display:inline-block;font-size:.85em;padding:0 4px;margin:1px 3px 1px 0;border-radius:3px;color:#fff}
.tag.mate{background:#2a9d4b}.tag.cold{background:#1f6fb2}
.meta{color:#666;font-size:.85em}
"""

# Reports, for a headless check, whether every image decoded: body[data-images] = "ok N" or "broken M/N".
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++) { if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) bad++; }
  document.body.setAttribute("data-images", bad ? "broken " + bad + "/" + imgs.length : "ok " + imgs.length);
});
"""


def neighbors_html(res: dict[str, Any], thumbnail: int = THUMBNAIL_PX,
                   max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """One self-contained HTML page of :func:`pin_neighborhoods`' result: the query pin, its graph
    neighborhood row and one row per run, each picture with its pin id, visits or score, caption
    and marks (green border and tag: board mate; blue tag: cold start). Images are inline
    ``data:`` URIs (PNG thumbnails of at most ``thumbnail`` px); a pin without a readable image
    gets a placeholder; nothing external is referenced."""
    p = res["pin"]
    gn = res["graph_neighborhood"]
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>pinclip neighbors: pin {e(str(p['pin_id']))}</title>"
             f"<style>{_STYLE % {'w': thumbnail + 6}}</style><script>{_SCRIPT}</script></head><body>",
             f"<h1>Neighbors of pin {e(str(p['pin_id']))}</h1>",
             f"<p class=\"meta\">graph store {e(str(res['graph']))}; {len(p['boards'])} board(s), "
             f"{p['board_mates']} board mate(s). Marks: <span class=\"tag mate\">board mate</span> shares a board "
             f"with the query (all edges); <span class=\"tag cold\">cold start</span> a fresh pin.</p>",
             "<h2>query</h2><div class=\"row\">",
             _cell(p, "(cold start)" if p["cold_start"] else "", thumbnail, max_pixels, "query"), "</div>",
             f"<h2>graph neighborhood</h2><p class=\"meta\">PinSage ({e(gn['sampler'])}, seed {gn['seed']}, "
             f"{gn['num_random_walks']} walks) on the training graph (without "
             f"{e(', '.join(gn['exclude_splits']) or 'no')} edges); {gn['total_visits']} visits.</p>"
             "<div class=\"row\">"]
    parts += [_cell(n, f"{n['visits']} visits", thumbnail, max_pixels) for n in gn["neighbors"]]
    if not gn["neighbors"]:
        parts.append("<p class=\"meta\">no neighbors: the pin has no training edge.</p>")
    parts.append("</div>")
    for r in res["runs"]:
        step = f", step {r['step']}" if r["step"] is not None else ""
        parts.append(f"<h2>{e(r['method'])}</h2><p class=\"meta\">{e(r['kind'])}{e(step)}, {e(r['embedding'])} "
                     f"embedding, cosine similarity; {e(r['dir'])}</p><div class=\"row\">")
        parts += [_cell(n, f"{n['score']:.3f}", thumbnail, max_pixels) for n in r["neighbors"]]
        if not r["neighbors"]:
            parts.append("<p class=\"meta\">no neighbors: the pin has no usable embedding row here.</p>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512)
    s = head.lstrip(b"\xef\xbb\xbf").lstrip().lower()
    return s.startswith(b"<!doctype html") or s.startswith(b"<html")


def check_html_output(path: str | os.PathLike) -> Path:
    """``path`` when :func:`write_html` may write it (absent, or a regular file that is an HTML
    page), else :class:`NeighborsError`. Call it before the work that makes the page."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_file() or path.is_symlink():
            raise NeighborsError(f"{path}: exists and is not a regular file; refusing to replace it")
        if not _looks_like_html(path):
            raise NeighborsError(f"{path}: exists and is not an HTML page; refusing to overwrite it "
                                 "(remove it or choose another name)")
    return path


def write_html(path: str | os.PathLike, page: str) -> Path:
    """Write ``page`` to ``path`` atomically (``graph.atomic.atomic_write_bytes``). An existing
    ``path`` is replaced only when it is a regular file that is itself an HTML page; anything
    else is a :class:`NeighborsError`."""
    path = check_html_output(path)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
