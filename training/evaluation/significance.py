"""Confidence intervals of the headline metrics and of method differences (``significance.json``).

:func:`write_significance` reads each evaluated method directory's per-query scores
(``DIR/per_query.npz``, :mod:`training.evaluation.per_query`; a directory without a current one
is evaluated first) and writes ``OUT/significance.json`` (atomically)::

    {"confidence": 0.95, "resamples": R, "seed": 0, "reference": "pinclip",
     "metrics": [...],                                  # the metrics considered
     "methods": {method: {metric: [low, high]}},        # interval of the metric
     "values":  {method: {metric: float}},              # its point estimate (seed mean)
     "paired":  {"pinclip vs clip_only": {metric: {"difference": d, "interval": [low, high],
                                                   "queries": Q}}, ...},
     "seeds":   {...}}                                  # only with > 1 seed of some method

**Queries.** A paired difference is computed on the query pins both directories have (e.g. a
baseline that cannot embed some pins does not query them: the difference uses only the pins
both methods queried; ``queries`` says how many, the fewest of any seed). A method's own
interval uses all its queries. Seeds may have different query sets (e.g. stores split with
different seeds): each seed is aligned with its partner only.

**Bootstrap over queries (one seed).** Percentile bootstrap: ``resamples`` draws of Q query
indices with replacement (an index matrix [R, Q] from ``numpy.random.default_rng``, seeded by
``seed`` and the metric's name, so a metric's resamples do not depend on which other methods
are in the call). A paired difference resamples the *same* queries for both methods: the
bootstrap of the per-query differences, which is narrower than two independent intervals when
the methods' per-query scores are correlated.

**Several seeds (training variance).** ``methods`` maps a method to one directory per training
seed; the lists are paired by position (seed i of the reference against seed i of the other; a
method with a single directory, e.g. a deterministic baseline, is paired with every seed). Then
the point estimate is the mean over seeds of each seed's mean, and the top-level interval comes
from a two-level bootstrap that holds both sources of variance: each resample resamples every
seed's queries (for a pair: the seed's per-query differences, so the same queries for both
methods) and then the seeds themselves with replacement (an index matrix [R, S]), and takes the
seed-weighted mean. With few seeds (2-3) the seed level of a bootstrap understates training
variance, so the ``seeds`` key reports it alone as well: the per-seed values, their mean and a
Student-t interval over the seeds' (seed-paired) values (``mean +- t_{S-1} * sd / sqrt(S)``;
None with one seed)::

    "seeds": {"counts": {method: S},
              "methods": {method: {metric: {"per_seed": [..], "mean": m, "interval": [lo, hi]|None,
                                            "queries": [Q_s, ..]}}},
              "paired": {"pinclip vs clip_only": {metric: {"per_seed": [..], "difference": d,
                                                           "interval": [lo, hi]|None,
                                                           "queries": [Q_s, ..]}}}}

1,000 resamples of 3,000 queries take about 10 ms per metric and seed.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from graph.atomic import atomic_write_bytes
from training.evaluation.per_query import PER_QUERY_FILE, PER_QUERY_METRICS, load_per_query

__all__ = ["SIGNIFICANCE_FILE", "write_significance", "significance", "bootstrap_mean_interval",
           "paired_bootstrap_interval", "load_significance", "per_query_scores"]

SIGNIFICANCE_FILE = "significance.json"
_MAX_CHUNK = 4_000_000            # resample-matrix entries held at a time

Scores = Mapping[str, tuple[np.ndarray, np.ndarray]]      # metric -> (pins [Q], values [Q])


# ------------------------------------------------------------------------------ bootstrap
def _rng(seed: int, metric: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(metric.encode())])


def _query_means(v: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """float64 [R]: means of ``v`` [Q] over ``resamples`` draws of Q queries with replacement (an
    index matrix [r, Q] per chunk of r resamples)."""
    q = v.shape[0]
    out = np.empty(resamples, dtype=np.float64)
    step = max(1, _MAX_CHUNK // max(q, 1))
    for r0 in range(0, resamples, step):
        r = min(step, resamples - r0)
        out[r0:r0 + r] = v[rng.integers(0, q, size=(r, q))].mean(axis=1)
    return out


def _two_level_means(vs: Sequence[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """float64 [R]: bootstrap means of per-seed query values ``vs`` (one float [Q_s] per seed):
    each seed's queries are resampled, and with S > 1 seeds the seeds too (weights [R, S] from an
    index matrix [R, S]); the resample's value is the seed-weighted mean of the query means."""
    m = np.stack([_query_means(v, resamples, rng) for v in vs])          # [S, R]
    if len(vs) == 1:
        return m[0]
    S = len(vs)
    sidx = rng.integers(0, S, size=(resamples, S))
    w = (sidx[:, :, None] == np.arange(S)).sum(axis=1) / S               # [R, S]
    return (w * m.T).sum(axis=1)


def _percentile_interval(samples: np.ndarray, confidence: float) -> list[float]:
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return [float(lo), float(hi)]


def _as_seed_list(values: Any) -> list[np.ndarray]:
    if isinstance(values, (list, tuple)) and values and np.ndim(values[0]) == 1:
        vs = [np.asarray(v, dtype=np.float64) for v in values]
    else:
        vs = list(np.atleast_2d(np.asarray(values, dtype=np.float64)))
    if not vs or any(v.size == 0 for v in vs):
        raise ValueError("bootstrap of an empty set of queries")
    return vs


def bootstrap_mean_interval(values: Any, confidence: float = 0.95, resamples: int = 1000, seed: int = 0,
                            metric: str = "") -> tuple[float, list[float]]:
    """(mean, [low, high]): percentile bootstrap interval of the mean of ``values``: float [Q] (one
    seed), [S, Q] or a list of S float [Q_s] (seeds, each with its own queries: the two-level
    bootstrap of the module docstring; the mean is the mean over seeds of each seed's mean)."""
    vs = _as_seed_list(values)
    samples = _two_level_means(vs, int(resamples), _rng(seed, metric))
    return float(np.mean([v.mean() for v in vs])), _percentile_interval(samples, confidence)


def paired_bootstrap_interval(a: Any, b: Any, confidence: float = 0.95, resamples: int = 1000, seed: int = 0,
                              metric: str = "") -> tuple[float, list[float]]:
    """(mean(a) - mean(b), [low, high]): paired bootstrap of the difference, the same resampled
    queries for ``a`` and ``b`` (float [Q], [S, Q] or lists of S float [Q_s], aligned query by
    query within each seed)."""
    va, vb = _as_seed_list(a), _as_seed_list(b)
    if [v.shape for v in va] != [v.shape for v in vb]:
        raise ValueError(f"paired bootstrap: shapes {[v.shape for v in va]} and {[v.shape for v in vb]} differ")
    return bootstrap_mean_interval([x - y for x, y in zip(va, vb)], confidence, resamples, seed, metric)


def _t_interval(x: Sequence[float], confidence: float) -> list[float] | None:
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return None
    from scipy.stats import t
    half = float(t.ppf(0.5 + confidence / 2.0, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return [float(x.mean() - half), float(x.mean() + half)]


# ------------------------------------------------------------------------------ alignment
def _aligned(score_sets: Sequence[Scores], metric: str) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """(common pins [Q], [values [Q] per score set]) of ``metric``; None when a set lacks it or
    no query pin is common to all."""
    if any(metric not in s for s in score_sets):
        return None
    common = None
    for s in score_sets:
        pins = np.asarray(s[metric][0], dtype=np.int64)
        common = pins if common is None else np.intersect1d(common, pins)
    if common is None or common.size == 0:
        return None
    vals = []
    for s in score_sets:
        pins, v = np.asarray(s[metric][0], dtype=np.int64), np.asarray(s[metric][1], dtype=np.float64)
        order = np.argsort(pins, kind="stable")
        pos = order[np.searchsorted(pins, common, sorter=order)]
        vals.append(v[pos])
    return common, vals


def _pair_seeds(ref: Sequence[Scores], other: Sequence[Scores], name: str) -> tuple[list, list]:
    if len(ref) == len(other):
        return list(ref), list(other)
    if len(other) == 1:
        return list(ref), [other[0]] * len(ref)
    if len(ref) == 1:
        return [ref[0]] * len(other), list(other)
    raise ValueError(f"significance: {name}: {len(ref)} and {len(other)} seed directories; paired by seed "
                     "they must be as many (or one of them a single directory)")


def significance(scores: Mapping[str, Sequence[Scores]], *, reference: str = "pinclip", confidence: float = 0.95,
                 resamples: int = 1000, seed: int = 0,
                 metrics: Sequence[str] = PER_QUERY_METRICS) -> dict[str, Any]:
    """The ``significance.json`` object (module docstring) from per-query scores:
    ``scores[method]`` is one ``{metric: (pins, values)}`` per seed directory."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: expected a value in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: expected >= 1")
    scores = {m: list(s) for m, s in scores.items()}
    for m, s in scores.items():
        if not s:
            raise ValueError(f"significance: method {m!r} has no evaluated directory")
    multi = any(len(s) > 1 for s in scores.values())
    out: dict[str, Any] = {"confidence": float(confidence), "resamples": int(resamples), "seed": int(seed),
                           "reference": reference, "metrics": list(metrics), "methods": {}, "values": {},
                           "paired": {}}
    seeds: dict[str, Any] = {"counts": {m: len(s) for m, s in scores.items()}, "methods": {}, "paired": {}}
    for method, sets in scores.items():
        iv, pt, sd = {}, {}, {}
        for metric in metrics:
            if any(metric not in st or len(st[metric][0]) == 0 for st in sets):
                continue                     # absent for some seed: never filled in
            vs = [np.asarray(st[metric][1], dtype=np.float64) for st in sets]      # each seed its own queries
            pt[metric], iv[metric] = bootstrap_mean_interval(vs, confidence, resamples, seed, metric)
            per_seed = [float(v.mean()) for v in vs]
            sd[metric] = {"per_seed": per_seed, "mean": float(np.mean(per_seed)),
                          "interval": _t_interval(per_seed, confidence), "queries": [int(v.size) for v in vs]}
        out["methods"][method], out["values"][method], seeds["methods"][method] = iv, pt, sd
    if reference in scores:
        for other in scores:
            if other == reference:
                continue
            key = f"{reference} vs {other}"
            ref_sets, oth_sets = _pair_seeds(scores[reference], scores[other], key)
            pr, ps = {}, {}
            for metric in metrics:
                # Seed s of the reference against seed s of the other, on the queries both have.
                pairs = [_aligned([r, o], metric) for r, o in zip(ref_sets, oth_sets)]
                if any(al is None for al in pairs):
                    continue
                a, b = [al[1][0] for al in pairs], [al[1][1] for al in pairs]
                d, interval = paired_bootstrap_interval(a, b, confidence, resamples, seed, metric)
                counts = [int(al[0].size) for al in pairs]
                pr[metric] = {"difference": d, "interval": interval, "queries": min(counts)}
                per_seed = [float((x - y).mean()) for x, y in zip(a, b)]
                ps[metric] = {"per_seed": per_seed, "difference": float(np.mean(per_seed)),
                              "interval": _t_interval(per_seed, confidence), "queries": counts}
            out["paired"][key], seeds["paired"][key] = pr, ps
    if multi:
        out["seeds"] = seeds
    return out


# ------------------------------------------------------------------------------ directories
def per_query_scores(path: str | os.PathLike, log=print, **evaluate_kwargs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The per-query scores of an evaluated method directory; a directory without a current
    ``evaluation.json`` + ``per_query.npz`` is evaluated first (``evaluate_dir``)."""
    from training.evaluation.run_eval import current_evaluation, evaluate_dir
    path = Path(path)
    if current_evaluation(path) is None or not (path / PER_QUERY_FILE).is_file():
        evaluate_dir(path, log=log, **evaluate_kwargs)
    return load_per_query(path / PER_QUERY_FILE)


def write_significance(out_dir: Path, methods: dict[str, list[Path]], *, reference: str = "pinclip",
                       confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> dict:
    """Write ``out_dir/significance.json`` (atomically) and return it (module docstring).

    methods: {method name: [evaluated directory per training seed]} (the lists paired by
    position; a single Path is taken as a one-element list). Every ``"{reference} vs {other}"``
    pair of the dict is compared. Directories without current per-query scores are evaluated."""
    scores = {}
    for name, dirs in methods.items():
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        scores[name] = [per_query_scores(d) for d in dirs]
    result = significance(scores, reference=reference, confidence=confidence, resamples=resamples, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / SIGNIFICANCE_FILE, (json.dumps(result, indent=2) + "\n").encode())
    return result


def load_significance(path: str | os.PathLike) -> dict[str, Any]:
    """A ``significance.json`` (or ``DIR/significance.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SIGNIFICANCE_FILE
    return json.loads(path.read_text())
