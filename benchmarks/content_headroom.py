"""How far content without a pretrained image tower can reach on a ``pinclip compare`` directory
(issue 16, item 6: why the Unihan targets stay unmet).

Reads a finished ``pinclip compare --dataset DATASET --out COMPARE`` directory (its graph store,
every method's ``runs/*/per_query.npz`` and the frozen text encoder's ``embedding_text.npy``) and
the images its store points at, and writes:

* **misses by board kind**: the warm test queries grouped by the kind of board their held-out
  edges lead to (the board id's prefix before ``:``, e.g. Unihan's ``radical`` / ``phonetic`` /
  ``meaning``; ``board`` when ids have no prefix), and each method's misses (board-mate
  recall@10 = 0) per group: where the frozen text encoder fails, and whether PinCLIP fixes it;
* **image features that need no training**: the images as 32 x 32 RGB vectors (mean-centered),
  and the same projected on their top principal components with the variance flattened
  (``pca_whitened``: the ``frozen_text_pixels`` baseline's image half,
  ``training.evaluation.pixel_baseline``): board-mate and cold-start recall@10 by cosine kNN;
* **late fusion with the frozen text encoder**: ``[sqrt(1 - a) * pixels, sqrt(a) * text]``, the
  text weight ``a`` chosen on the validation split (never on test), scored on test and cold start
  (for ``pca_whitened``, the ``frozen_text_pixels`` baseline);
* **the per-query union** of the frozen text encoder's and the pixels' hits: the share of warm
  queries that at least one of the two finds. It is not a bound on what one embedding can do,
  only a pointer to how much the two signals could add up to if a model combined them perfectly;
* with ``--heads``, **each trained run's heads and their late fusion**: for every
  ``runs/<method>[-seedN]/embeddings`` with image and text heads (PinCLIP, CLIP-only), the image,
  text and fused heads and ``[sqrt(1 - a) * image, sqrt(a) * text]`` with ``a`` chosen on
  validation, and the paired bootstrap interval of that late fusion against the frozen text
  encoder over the same queries (seeds paired: the two-level bootstrap of
  ``training.evaluation.significance``);
* the **target**: the recall@10 at which the miss rate (1 - recall@10) of the frozen text encoder
  is cut by 20% (issue 16's bar).

    python benchmarks/content_headroom.py --compare /tmp/cmp_unihan --heads --json

CPU only, seconds: no training.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_common import cpu_model, emit_report  # noqa: E402
from graph.splits import COLD, TEST, TRAIN  # noqa: E402
from graph.store import PinBoardGraph  # noqa: E402
from training.evaluation.pixel_baseline import PIXEL_SIDE, late_fusion, pixel_embeddings  # noqa: E402
from training.evaluation.significance import paired_bootstrap_interval  # noqa: E402
from training.evaluation.retrieval import board_mate_positives, pin_retrieval  # noqa: E402
from training.evaluation.run_eval import CURVE_KS  # noqa: E402

MISS_CUT = 0.20       # issue 16's target: the frozen text encoder's miss rate cut by 20%


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). float32 [N, D] -> float32 [N, D]."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class Queries:
    """The warm test and cold-start board-mate queries of a graph (the evaluation's protocol)."""

    def __init__(self, g: PinBoardGraph):
        self.g = g
        pins, boards = g.edges()
        self.pins, self.boards = pins, boards
        self.split = torch.from_numpy(np.asarray(g.splits.edge_split).astype(np.int64))
        train = self.split == TRAIN
        self.parts = {}
        for name, code in (("board_recall@10", TEST), ("cold_start_board_recall@10", COLD)):
            sel = self.split == code
            self.parts[name] = board_mate_positives(pins[sel], boards[sel], pins[train], boards[train],
                                                    num_pins=g.num_pins)

    def score(self, emb: np.ndarray) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
        """metric -> (recall@10, query pins int64 [Q], per-query hits float [Q])."""
        out = {}
        # Scored as given, by dot product, as the evaluation scores a method's rows (a late fusion's
        # row of a pin without text keeps its smaller norm).
        e = torch.from_numpy(np.nan_to_num(np.asarray(emb, dtype=np.float32)))
        for name, (qp, pos) in self.parts.items():
            per_query: dict = {}
            # The evaluation's cut-offs: recall@10 breaks score ties in top-k order, which depends
            # on the largest k asked for, so the same list gives the evaluation's numbers.
            m = pin_retrieval(e, qp, pos, ks=sorted({10, *CURVE_KS}), prefix="", per_query=per_query)
            out[name] = (m["recall@10"], qp[torch.from_numpy(per_query["rows"])].numpy(), per_query["recall@10"])
        return out


def _per_query(path: Path, metric: str) -> dict[int, float]:
    z = np.load(path)
    if f"{metric}::pins" not in z.files:
        return {}
    return dict(zip(z[f"{metric}::pins"].tolist(), z[f"{metric}::values"].tolist()))


def fused_with(q: Queries, image: np.ndarray, text: np.ndarray) -> tuple[float, dict]:
    """``training.evaluation.pixel_baseline.late_fusion`` (the text weight chosen on validation)
    of ``image`` and ``text`` (float [P, D*]): (text weight, that embedding's ``Queries.score``)."""
    fused = late_fusion(q.g, torch.from_numpy(_unit(image)), torch.from_numpy(_unit(text)))
    return fused.text_weight, q.score(fused.embedding.numpy())


def trained_heads(q: Queries, runs: Path, frozen: dict) -> dict:
    """method -> {"runs": {run: {head: [board, cold start]}}, "late_fusion - frozen_text": {metric:
    {"difference": d, "interval": [lo, hi]}}} for every run directory with image and text heads;
    ``frozen``: the frozen text encoder's ``Queries.score``."""
    groups: dict = collections.defaultdict(list)
    for d in sorted(runs.iterdir()):
        if (d / "embeddings" / "image.npy").exists() and (d / "embeddings" / "text.npy").exists():
            groups[d.name.split("-seed", 1)[0]].append(d)
    out = {}
    for method, dirs in groups.items():
        rows, late_hits = {}, collections.defaultdict(list)
        for d in dirs:
            emb = {h: np.load(d / "embeddings" / f"{h}.npy") for h in ("image", "text", "fused")
                   if (d / "embeddings" / f"{h}.npy").exists()}
            row = {h: [v[0] for v in q.score(e).values()] for h, e in emb.items()}
            a, s = fused_with(q, emb["image"], emb["text"])
            row["late_fusion"] = [v[0] for v in s.values()]
            row["late_fusion_text_weight"] = a
            rows[d.name] = row
            for metric, (_, qp, hits) in s.items():
                assert np.array_equal(qp, frozen[metric][1])
                late_hits[metric].append(hits)
        paired = {}
        for metric, hits in late_hits.items():
            d, iv = paired_bootstrap_interval(hits, [frozen[metric][2]] * len(hits), metric=metric)
            paired[metric] = {"difference": d, "interval": iv}
        out[method] = {"runs": rows, "late_fusion - frozen_text": paired}
    return out


def misses_by_board_kind(q: Queries, runs: Path) -> dict:
    """kind -> {"queries": n, "misses": {method: n}} over the warm test queries; methods are the
    seed-0 runs (directories without a ``-seedN`` suffix) that have per-query board recall."""
    bid = q.g.external_board_ids(np.arange(q.g.num_boards))
    kinds = collections.defaultdict(set)
    test = torch.nonzero(q.split == TEST).squeeze(1)
    for e in test.tolist():
        b = str(bid[int(q.boards[e])])
        kinds[int(q.pins[e])].add(b.split(":", 1)[0] if ":" in b else "board")
    methods = {d.name: _per_query(d / "per_query.npz", "board_recall@10") for d in sorted(runs.iterdir())
               if "-seed" not in d.name and (d / "per_query.npz").exists()}
    methods = {k: v for k, v in methods.items() if v}
    table: dict = {}
    for pin, ks in kinds.items():
        row = table.setdefault("+".join(sorted(ks)), {"queries": 0, "misses": collections.Counter()})
        row["queries"] += 1
        for m, hits in methods.items():
            if pin in hits:
                row["misses"][m] += int(hits[pin] == 0)
    return {k: {"queries": v["queries"], "misses": dict(v["misses"])}
            for k, v in sorted(table.items(), key=lambda kv: -kv[1]["queries"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `pinclip compare` --out directory")
    ap.add_argument("--heads", action="store_true",
                    help="also score every trained run's heads and their late fusion (see the docstring)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument("--json", action="store_true", help="print the JSON report")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    for need in (args.compare / "graph", args.compare / "runs" / "frozen_text" / "embedding_text.npy"):
        if not need.exists():
            ap.error(f"{need} does not exist: --compare must be a finished `pinclip compare` directory")
    g = PinBoardGraph.open(args.compare / "graph")
    q = Queries(g)
    text = np.load(args.compare / "runs" / "frozen_text" / "embedding_text.npy")
    paths = g.features.pin_image_paths(np.arange(g.num_pins))
    pixels, _ = pixel_embeddings(paths, components=3 * PIXEL_SIDE ** 2, power=0.0)   # every component: raw
    features = {"frozen_text": text, "pixels": pixels.numpy(), "pca_whitened": pixel_embeddings(paths)[0].numpy()}
    scored = {name: q.score(f) for name, f in features.items()}
    report: dict = {
        "benchmark": "content_headroom", "compare": str(args.compare),
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cores": os.cpu_count()},
        "recall@10": {n: {m: v[0] for m, v in s.items()} for n, s in scored.items()},
        "misses_by_board_kind": misses_by_board_kind(q, args.compare / "runs"),
    }
    report["target"] = {m: 1 - (1 - MISS_CUT) * (1 - v) for m, v in report["recall@10"]["frozen_text"].items()}
    fusion = {}
    for name in ("pixels", "pca_whitened"):
        best, test = fused_with(q, features[name], text)
        fusion[name] = {"text_weight": best, **{m: v[0] for m, v in test.items()}}
        for metric, (_, qp, hits) in test.items():
            d, iv = paired_bootstrap_interval(hits, scored["frozen_text"][metric][2], metric=metric)
            fusion[name][f"{metric} - frozen_text"] = {"difference": d, "interval": iv}
    report["late_fusion_with_frozen_text"] = fusion
    union = {}
    for name in ("pixels", "pca_whitened"):
        union[name] = {}
        for metric, (_, qp_t, hit_t) in scored["frozen_text"].items():
            _, qp_i, hit_i = scored[name][metric]
            assert np.array_equal(qp_t, qp_i)
            union[name][metric] = float(np.maximum(hit_t, hit_i).mean())
    report["union_of_hits_with_frozen_text"] = union
    if args.heads:
        report["trained_heads"] = trained_heads(q, args.compare / "runs", scored["frozen_text"])
    report["seconds"] = time.perf_counter() - t0
    if not emit_report(report, args.out, args.json):
        print(f"recall@10 (board / cold start): " + ", ".join(
            f"{n} {v['board_recall@10']:.3f} / {v['cold_start_board_recall@10']:.3f}" for n, v in report["recall@10"].items()))
        print("target (20% of the frozen text encoder's misses): " + " / ".join(f"{v:.3f}" for v in report["target"].values()))
        for n, f in fusion.items():
            print(f"late fusion, {n} (text weight {f['text_weight']} on validation): "
                  f"{f['board_recall@10']:.3f} / {f['cold_start_board_recall@10']:.3f}")
        for method, h in report.get("trained_heads", {}).items():
            for run, row in h["runs"].items():
                print(f"{run}: " + ", ".join(f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in row.items() if isinstance(v, list))
                      + f" (late fusion text weight {row['late_fusion_text_weight']})")
            print(f"{method} late fusion - frozen text: " + ", ".join(
                f"{m} {v['difference']:+.3f} [{v['interval'][0]:+.3f}, {v['interval'][1]:+.3f}]"
                for m, v in h["late_fusion - frozen_text"].items()))
        for n, u in union.items():
            print(f"union of hits, frozen text | {n}: " + " / ".join(f"{v:.3f}" for v in u.values()))
        for kind, row in report["misses_by_board_kind"].items():
            print(f"  {kind}: {row['queries']} queries, misses {row['misses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
