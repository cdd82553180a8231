"""The comparison report of several methods (``pinclip report``, the end of ``pinclip demo``).

``write_report(dirs, out)`` reads (or computes) each method directory's ``evaluation.json``
(``training.evaluation.run_eval``), then writes into ``out``:

* ``metrics.json``: ``{method: {DESIGN.md metric: value}}`` (null: the method cannot produce it,
  e.g. cold-start recall of the graph-only baseline);
* ``report.md``: the comparison table, the demo's bar (``bar_checks``), every method's heads
  side by side (method x head: board-mate and cold-start recall@10, the validation recall that
  chose the headline head, untrained heads marked), text -> image at the topic level on the
  synthetic world, neighborhood quality, and the plots below. With ``significance`` (the
  ``significance.json`` of ``training.evaluation.significance``) the tables carry the confidence
  intervals, and the bar's checks use them: a check claiming a gain passes only if the paired
  interval's low end is > 0;
* PNG plots: recall@k curves per method (board-mate, cold-start, text -> image), cold-start
  against warm bars, a 2-D PCA of each method's pin embeddings colored by hidden topic (synthetic
  world) or by board, cosine histograms of board mates against random pairs, and the training
  loss of every training run from its ``RUN_DIR/metrics.jsonl`` (``training_loss.png``).

The tables of report.md carry the chance level (``CHANCE_ROW``: random unit embeddings scored with
the same protocol, ``training.evaluation.run_eval.chance_metrics``) as a reference row; it is not
a method of metrics.json. Methods scored on different graph stores (their ``evaluation.json``'s
manifest sha256, else path) are not comparable: :class:`MixedGraphsError` names each method's
store unless ``allow_mixed_graphs``; report.md's header names every method's store.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from graph.atomic import atomic_directory, atomic_write_bytes
from graph.output_dir import OutputKind
from training.evaluation.run_eval import (CURVE_KS, EvaluationError, board_mate_pairs, chance_metrics,
                                          current_evaluation, evaluate_method, load_method, truth_labels)
from training.evaluation.significance import load_significance
from training.evaluation.summary import HEADLINE_KEYS, PIN_EMBEDDING_ORDER, headline_metrics
from training.logging_utils import read_jsonl

__all__ = ["BAR", "CHANCE_ROW", "REPORT_OUTPUT", "MixedGraphsError", "bar_checks", "check_same_graph",
           "format_checks", "format_rows", "heads_table", "write_report", "write_report_directory", "metrics_table"]

# The label of the chance-level reference row (random unit embeddings; never a method).
CHANCE_ROW = "chance (random)"


class MixedGraphsError(EvaluationError):
    """Methods evaluated on different graph stores (names each method's store)."""


def _store_key(ev: dict[str, Any]) -> str:
    """What identifies the store an evaluation was made on: its manifest sha256, else its path."""
    return ev.get("graph_manifest_sha256") or str(Path(ev.get("graph") or "?").absolute())


def _store_label(ev: dict[str, Any]) -> str:
    sha = ev.get("graph_manifest_sha256")
    return f"`{ev.get('graph')}`" + (f" (manifest sha256 {sha[:12]})" if sha else " (no manifest sha256 recorded)")


def check_same_graph(evals: Sequence[dict[str, Any]], allow_mixed_graphs: bool = False) -> list[list[dict]]:
    """The evaluations grouped by graph store (first-seen order). More than one group raises
    :class:`MixedGraphsError` naming every method's store, unless ``allow_mixed_graphs``."""
    groups: dict[str, list[dict]] = {}
    for e in evals:
        groups.setdefault(_store_key(e), []).append(e)
    if len(groups) > 1 and not allow_mixed_graphs:
        named = "; ".join(f"{e['method']} ({e.get('dir') or '?'}): {_store_label(e)}" for e in evals)
        raise MixedGraphsError(
            f"the methods were evaluated on {len(groups)} different graph stores, so their scores are not "
            f"comparable (other splits, other held-out edges): {named}. Evaluate them on one store, or pass "
            "--allow-mixed-graphs (allow_mixed_graphs=True) to report them side by side anyway.")
    return list(groups.values())

REPORT_FORMAT = "pinclip-report"
# ``pinclip report --out DIR`` as an output (graph.output_dir): it replaces only its own reports.
REPORT_OUTPUT = OutputKind("a report", "pinclip report", "report.json", "format", REPORT_FORMAT)

# The bar of the demo (issue: evaluation): (metric, method, baseline, minimum relative change).
# A negative minimum is the largest loss allowed.
BAR = (
    ("board_recall@10", "pinclip", "clip_only", 0.15),
    ("cold_start_board_recall@10", "pinclip", "clip_only", 0.15),
    ("board_recall@10", "pinclip", "frozen_text", 0.20),
    ("t2i_recall@10", "pinclip", "clip_only", -0.05),
)


def _paired(significance: dict | None, method: str, base: str, metric: str) -> dict | None:
    if not significance:
        return None
    return (significance.get("paired", {}).get(f"{method} vs {base}") or {}).get(metric)


def bar_checks(metrics: dict[str, dict[str, float | None]], significance: dict | None = None) -> list[dict[str, Any]]:
    """Each ``BAR`` row whose methods are present: {"metric", "method", "baseline", "value",
    "baseline_value", "relative", "target", "passed", "difference", "interval"} (``relative`` =
    value / baseline - 1).

    Without ``significance`` a check passes on the point estimates (``relative >= target``). With
    it (a ``significance.json`` object), ``difference`` / ``interval`` are the paired bootstrap's
    for "method vs baseline", and a check that claims a gain (target > 0) passes only when also
    the interval's low end is > 0 (no interval: not passed). A check that bounds a loss (target
    <= 0) passes on the point estimate; ``interval_supports`` then says whether the interval's low
    end is above the allowed loss (``target * baseline_value``)."""
    out = []
    for metric, method, base, target in BAR:
        if method not in metrics or base not in metrics:
            continue
        v, b = metrics[method].get(metric), metrics[base].get(metric)
        rel = None if v is None or b is None or b == 0 else v / b - 1
        # 1e-9: 0.19 / 0.2 - 1 is -0.0500000004 in floating point, yet exactly at the bar
        passed = rel is not None and rel >= target - 1e-9
        row = {"metric": metric, "method": method, "baseline": base, "value": v, "baseline_value": b,
               "relative": rel, "target": target, "passed": passed, "difference": None, "interval": None}
        if significance is not None:
            p = _paired(significance, method, base, metric)
            if p is not None:
                row["difference"], row["interval"] = p.get("difference"), p.get("interval")
            low = None if row["interval"] is None else row["interval"][0]
            if target > 0:
                row["passed"] = passed and low is not None and low > 0
            else:
                row["interval_supports"] = (low is not None and b is not None and low >= target * b - 1e-12)
        out.append(row)
    return out


def _interval(iv: Sequence[float] | None, digits: int = 3) -> str:
    return "n/a" if iv is None else f"[{iv[0]:.{digits}f}, {iv[1]:.{digits}f}]"


def format_checks(checks: list[dict[str, Any]]) -> str:
    """One line per ``bar_checks`` row: PASS/FAIL, the comparison, the relative change, the bar
    (and the paired difference's interval when the checks were made with one)."""
    lines = []
    for c in checks:
        rel = "n/a" if c["relative"] is None else f"{c['relative']:+.1%}"
        ci = ""
        if c.get("interval") is not None:
            ci = f"; difference {c['difference']:+.3f}, interval {_interval(c['interval'])}"
        lines.append(f"{'PASS' if c['passed'] else 'FAIL'}  {c['method']} vs {c['baseline']} on {c['metric']}: "
                     f"{rel} (bar {c['target']:+.0%}{ci})")
    return "\n".join(lines)


def heads_table(evals: Sequence[dict[str, Any]], chance: dict[str, dict[str, Any]] | None = None,
                markdown: bool = True) -> list[list[str]]:
    """Rows (header first): every method's embedding heads side by side: head, whether a loss
    trains it, whether it is the headline head, its board-mate recall@10 on the validation split
    (what chose the headline head), and on test, and cold-start recall@10. Older evaluations
    without ``heads`` show their ``modalities``. markdown: bold marks (else plain text)."""
    b = "**" if markdown else ""
    rows = [["method", "head", "trained", "headline", "val board_recall@10", "board_recall@10",
             "cold_start_board_recall@10"]]
    for e in evals:
        heads = e.get("heads") or {n: dict(v, trained=None) for n, v in (e.get("modalities") or {}).items()}
        headline = e.get("headline_head")
        for name in [n for n in PIN_EMBEDDING_ORDER if n in heads]:
            h = heads[name]
            trained = "?" if h.get("trained") is None else ("yes" if h["trained"] else f"{b}no (untrained){b}")
            rows.append([e["method"], name, trained, f"{b}yes{b}" if name == headline else "",
                         _fmt(h.get("val_board_recall@10")), _fmt(h.get("board_recall@10")),
                         _fmt(h.get("cold_start_board_recall@10"))])
    for label, c in (chance or {}).items():
        rows.append([label, "random", "", "", "", _fmt(c["full"].get("board_recall@10")),
                     _fmt(c["full"].get("cold_start_board_recall@10"))])
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def metrics_table(metrics: dict[str, dict[str, float | None]], keys: Sequence[str] = HEADLINE_KEYS) -> list[list[str]]:
    """Rows (header first) of methods x metrics; keys no method has are dropped."""
    keys = [k for k in keys if any(k in m for m in metrics.values())]
    rows = [["method", *keys]]
    for name, m in metrics.items():
        rows.append([name, *[_fmt(m.get(k)) for k in keys]])
    return rows


def format_rows(rows: list[list[str]], markdown: bool = False) -> str:
    """A plain-text (aligned columns) or Markdown table of already-formatted string ``rows``
    (header first), e.g. from ``metrics_table``. (For a ``{row: {column: value}}`` mapping, as in
    the notebooks, see ``training.notebook_utils.format_table``.)"""
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def _float(v: Any) -> float:
    """A logged value as a float (metrics.jsonl writes non-finite values as strings)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _curves(ev: dict, prefix: str) -> dict[int, float]:
    m = ev["metrics"]
    return {k: m[f"{prefix}recall@{k}"] for k in CURVE_KS if m.get(f"{prefix}recall@{k}") is not None}


def _labels(g: Any) -> tuple[np.ndarray, str]:
    """int [P] colors for the projection: the hidden topic when known, else the pin's first board."""
    truth = truth_labels(g)
    if truth is not None:
        return truth["topic"], "hidden topic"
    lab = np.full(g.num_pins, -1, dtype=np.int64)
    indptr, indices = np.asarray(g.pin_indptr), np.asarray(g.pin_indices)
    has = indptr[1:] > indptr[:-1]
    lab[has] = indices[indptr[:-1][has]]
    return lab, "first board"


def write_report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike, device: str = "auto",
                 progress: bool = True, log=print, title: str = "PinCLIP evaluation report",
                 extra_md: str = "", allow_mixed_graphs: bool = False,
                 significance: dict | str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate (or read) every method directory in ``dirs`` and write the report into ``out``.
    Returns {"metrics": {method: headline}, "checks": bar_checks, "chance": {row label: headline}
    (the reference rows, one per graph store), "evaluations": [...], "files": [...]}.
    Raises :class:`MixedGraphsError` when the methods were evaluated on different graph stores,
    unless ``allow_mixed_graphs``. significance: a ``significance.json`` object or its path (file
    or directory): its intervals are shown and the bar's checks use them (``bar_checks``)."""
    from training.evaluation import plots

    if significance is not None and not isinstance(significance, dict):
        significance = load_significance(significance)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Each directory is opened once: its embeddings serve the evaluation (when evaluation.json is
    # missing or stale) and the projection plots below.
    methods, evals = [], []
    for d in dirs:
        m = load_method(d, device=device, progress=progress, log=log)
        methods.append(m)
        evals.append(current_evaluation(d) or evaluate_method(m, d))
    names = [e["method"] for e in evals]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two directories evaluate the same method name {dup}: rename one of them "
                         f"({', '.join(str(d) for d in dirs)})")
    groups = check_same_graph(evals, allow_mixed_graphs)
    metrics = {e["method"]: headline_metrics(e["metrics"]) for e in evals}
    checks = bar_checks(metrics, significance)
    # The chance level of each store (the same for every method on it); older evaluation.json files
    # have none: computed here then.
    chance: dict[str, dict[str, Any]] = {}
    for i, group in enumerate(groups):
        full = next((e["chance"] for e in group if e.get("chance")), None)
        if full is None:
            full = chance_metrics(methods[evals.index(group[0])]["graph"])
        label = CHANCE_ROW if len(groups) == 1 else f"{CHANCE_ROW}, store {i + 1}"
        chance[label] = {"headline": headline_metrics(full), "full": full}
    summary_plots: list[Path] = []      # one per report; the per-method plots follow them
    summary_plots.append(plots.plot_recall_curves({e["method"]: _curves(e, "board_") for e in evals},
                                          out / "recall_board.png", "board-mate recall@k (warm test pins)"))
    cold = {e["method"]: _curves(e, "cold_start_board_") for e in evals}
    if any(cold.values()):
        summary_plots.append(plots.plot_recall_curves(cold, out / "recall_cold_start.png",
                                              "board-mate recall@k (cold-start pins)"))
    t2i = {e["method"]: _curves(e, "t2i_") for e in evals}
    if any(t2i.values()):
        summary_plots.append(plots.plot_recall_curves(t2i, out / "recall_t2i.png", "text -> image recall@k"))
    summary_plots.append(plots.plot_cold_warm_bars(
        {n: {"warm": m.get("board_recall@10"), "cold": m.get("cold_start_board_recall@10")} for n, m in metrics.items()},
        out / "cold_vs_warm.png"))
    projections = []
    for m, e in zip(methods, evals):
        g = m["graph"]
        name = next(n for n in PIN_EMBEDDING_ORDER if n in m["emb"])
        emb = m["emb"][name].clone()
        sup = torch.ones(g.num_pins, dtype=torch.bool) if m["supported"] is None else m["supported"].bool()
        labels, by = _labels(g)
        labels = np.where(sup.numpy(), labels, -1)
        safe = e["method"].replace("/", "_")
        p = plots.plot_projection(emb[sup], labels[sup.numpy()], out / f"projection_{safe}.png",
                                  title=f"{e['method']} ({name}): PCA by {by}")
        pairs = board_mate_pairs(g)
        pairs = pairs[sup[pairs[:, 0]] & sup[pairs[:, 1]]]
        h = plots.plot_similarity_histogram(emb, pairs, out / f"similarity_{safe}.png",
                                            title=f"{e['method']}: board mates vs random")
        projections.append((e["method"], p, h))

    loss_curves = {}
    for m, e, d in zip(methods, evals, dirs):
        if m["kind"] != "run":
            continue
        recs = [r for r in read_jsonl(Path(d) / "metrics.jsonl") if "step" in r and "loss" in r]
        if recs:
            loss_curves[e["method"]] = ([int(r["step"]) for r in recs], [_float(r["loss"]) for r in recs])
    loss_plot = plots.plot_training_loss(loss_curves, out / "training_loss.png") if loss_curves else None

    md = [f"# {title}", "", f"Methods: {', '.join(names)}. Graph: `{evals[0]['graph']}` "
          f"({evals[0]['counts']['pins']:,} pins; {evals[0]['counts']['test_edges']:,} test edges of warm pins, "
          f"{evals[0]['counts']['cold_start_edges']:,} edges of cold-start pins hidden in training).", ""]
    if len(groups) > 1:
        md += [f"**Mixed graph stores** ({len(groups)}; allowed with `--allow-mixed-graphs`): methods on "
               "different stores were scored on different held-out edges, so their rows are not comparable.", ""]
    md += ["Graph store of each method:", ""]
    md += [f"- {e['method']}: {_store_label(e)}" for e in evals]
    md.append("")
    if extra_md:
        md += [extra_md, ""]
    md += ["## Headline metrics", "",
           "Board-mate retrieval: each test edge (pin, board) of a warm pin queries every other pin by cosine; "
           "the board's training members are its positives (recall@10 = share of queries with a board mate in "
           "the top 10; MRR tie-aware). Cold start: the same for pins whose every edge was hidden in training "
           "(content only). `n/a`: the method cannot produce the metric (the graph-only model has no "
           "embedding for a pin without edges; text-only methods have no image). "
           f"`{CHANCE_ROW}`: random unit embeddings scored the same way (the chance level; not a method).", "",
           format_rows(metrics_table({**metrics, **{k: v["headline"] for k, v in chance.items()}},
                                     keys=[k for k in HEADLINE_KEYS if any(k in m for m in metrics.values())]),
                       markdown=True), ""]
    md += ["Each method is scored on the embedding head its losses train: a training run's headline head is "
           "the trained head (of fused, image, text) with the best board-mate recall@10 on the store's "
           "validation edges (never test); a head no loss trains (the CLIP-only run's fusion) is never a "
           "headline. Headline heads: " + ", ".join(f"{e['method']}: {e.get('headline_head', '?')}" for e in evals)
           + " (every head: below).", ""]
    if checks:
        with_ci = significance is not None
        md += ["## The bar", ""]
        if with_ci:
            md += [f"With {significance.get('confidence', 0.95):.0%} paired bootstrap intervals over query pins "
                   f"({significance.get('resamples')} resamples): a gain passes only when the interval of the "
                   "difference lies above 0.", ""]
        head = "| check | value | baseline | relative | target |" + (" difference [interval] |" if with_ci else "") + " |"
        md += [head, "|" + "---|" * (head.count("|") - 1)]
        for c in checks:
            rel = "n/a" if c["relative"] is None else f"{c['relative']:+.1%}"
            ci = ""
            if with_ci:
                ci = (" n/a |" if c.get("interval") is None
                      else f" {c['difference']:+.3f} {_interval(c['interval'])} |")
            verdict = "pass" if c["passed"] else "**FAIL**"
            if c["passed"] and c.get("interval_supports") is False:
                verdict += " (point estimate; the interval reaches below the allowed loss)"
            md.append(f"| {c['method']} vs {c['baseline']}: {c['metric']} | {_fmt(c['value'])} | "
                      f"{_fmt(c['baseline_value'])} | {rel} | {c['target']:+.0%} |{ci} {verdict} |")
        md.append("")
    if significance is not None:
        conf = significance.get("confidence", 0.95)
        keys = [k for k in significance.get("metrics", []) if any(k in v for v in significance.get("methods", {}).values())]
        if keys:
            rows = [["method", *keys]]
            for name, ivs in significance.get("methods", {}).items():
                vals = significance.get("values", {}).get(name, {})
                rows.append([name, *[(f"{_fmt(vals.get(k))} {_interval(ivs[k])}" if k in ivs else "n/a") for k in keys]])
            prow = [["comparison", "metric", "difference", "interval", "queries"]]
            for pair, ms in significance.get("paired", {}).items():
                for k, v in ms.items():
                    prow.append([pair, k, f"{v['difference']:+.3f}", _interval(v["interval"]),
                                 str(v.get("queries", "?"))])
            md += ["## Confidence intervals", "",
                   f"{conf:.0%} percentile bootstrap over query pins ({significance.get('resamples')} resamples"
                   + (f"; {', '.join(f'{m}: {n}' for m, n in significance['seeds']['counts'].items())} seeds, "
                      "resampled too, values are seed means" if significance.get("seeds") else "")
                   + "). Paired: the same resampled queries for both methods.", "",
                   format_rows(rows, markdown=True), "", format_rows(prow, markdown=True), ""]
    hrows = heads_table(evals, chance)
    if len(hrows) > 1:
        md += ["## Heads", "",
               "Every method's embedding heads side by side (board-mate recall@10 of warm test pins and of "
               "cold-start pins; `val`: on validation edges, which chose the headline head). An untrained head "
               "(no loss term gives it a gradient: e.g. the fused head of a run whose neighbor weights are all 0 "
               "is the fusion module at initialization) is shown but never used as a headline. The image "
               "embedding is what serves a fresh pin from its pixels alone.", "",
               format_rows(hrows, markdown=True), ""]
    topic = [e for e in evals if e["metrics"].get("t2i_topic_precision@10") is not None]
    if topic:
        trow = [["method", "t2i_recall@10 (exact pin)", "t2i_topic_precision@10"]]
        for e in topic:
            trow.append([e["method"], _fmt(e["metrics"].get("t2i_recall@10")),
                         _fmt(e["metrics"].get("t2i_topic_precision@10"))])
        for label, c in chance.items():
            if c["full"].get("t2i_topic_precision@10") is not None:
                trow.append([label, _fmt(c["full"].get("t2i_recall@10")), _fmt(c["full"].get("t2i_topic_precision@10"))])
        m0 = topic[0]["metrics"]
        md += ["## Text -> image by topic", "",
               "t2i_topic_precision@10: for each caption query, the share of its top-10 images whose pin has the "
               "query pin's hidden topic. On the synthetic world the exact-pin t2i_recall@10 cannot move much: "
               "a caption names only its pin's topic (never the style), so the pin's own image is one of "
               + (f"about {m0['t2i_topic_pins_per_topic']:.0f} " if m0.get("t2i_topic_pins_per_topic") else "the ")
               + "candidates of that topic and the best "
               "recall@10 a model can reach is about 10 / pins-per-topic: "
               f"{m0.get('t2i_recall@10_topic_ceiling', float('nan')):.3f} on this store (mean over the caption "
               "queries of min(1, 10 / same-topic images)).", "",
               format_rows(trow, markdown=True), ""]
    hood_keys = sorted({k for e in evals for k in e.get("neighborhood", {})})
    if hood_keys:
        rows = [["method", *hood_keys]] + [[e["method"], *[_fmt(e["neighborhood"].get(k)) for k in hood_keys]]
                                           for e in evals]
        md += ["## Neighborhood quality", "",
               "board_coherence: mean intra-board minus inter-board cosine (train edges); alignment: mean squared "
               "distance of board mates (lower is tighter); uniformity: log E exp(-2 d^2) (lower is more spread); "
               "*_purity@10: share of the 10 nearest neighbors with the same hidden topic / style (synthetic "
               "world only). neighbor_overlap@10 (above): overlap with the random-walk top-10 neighborhood.", "",
               format_rows(rows, markdown=True), ""]
    md += ["## Plots", ""]
    for f in summary_plots:
        md.append(f"![{f.stem}]({f.name})")
    md.append("")
    if loss_plot is not None:
        md += ["### Training loss", "", f"From each training run's `metrics.jsonl`: {', '.join(loss_curves)}.", "",
               f"![{loss_plot.stem}]({loss_plot.name})", ""]
    for name, p, h in projections:
        md += [f"### {name}", "", f"![{p.stem}]({p.name}) ![{h.stem}]({h.name})", ""]
    md += [f"_Written in {time.perf_counter() - t0:.1f} s from: " +
           ", ".join(f"`{d}`" for d in dirs) + "._", ""]
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    files = [*summary_plots, *([loss_plot] if loss_plot is not None else []),
             *(f for _, p, h in projections for f in (p, h)), out / "metrics.json", out / "report.md"]
    return {"metrics": metrics, "checks": checks, "chance": {k: v["headline"] for k, v in chance.items()},
            "significance": significance,
            "evaluations": evals, "files": files}


def write_report_directory(dirs: Sequence[str | os.PathLike], out: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """``write_report`` into a directory of its own, written atomically under the output policy
    (``graph.output_dir``): ``out`` must be missing, empty or an earlier report, which is replaced
    whole; ``out/report.json`` records the method directories. Same return value, with ``files``
    under ``out``."""
    out = Path(out).absolute()
    with atomic_directory(out, REPORT_OUTPUT) as tmp:
        rep = write_report(dirs, tmp, **kwargs)
        meta = {"format": REPORT_FORMAT, "version": 1, "methods": list(rep["metrics"]),
                "sources": [str(Path(d).absolute()) for d in dirs],
                "graphs": {e["method"]: {"graph": e.get("graph"), "manifest_sha256": e.get("graph_manifest_sha256")}
                           for e in rep["evaluations"]}}
        (tmp / "report.json").write_text(json.dumps(meta, indent=2) + "\n")
    rep["files"] = [out / Path(f).name for f in rep["files"]] + [out / "report.json"]
    return rep
