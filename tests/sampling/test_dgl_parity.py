"""Parity with DGL's samplers, where DGL imports in the test interpreter (skipped otherwise).

DGL 2.1 needs torch <= 2.2.1, so in this project it lives in a side environment; there the same
comparison runs as ``.venv-dgl/bin/python benchmarks/dgl_side/sampling_dgl.py parity`` (results
in benchmarks/RESULTS.md).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.dgl

try:  # DGL raises assorted errors (not only ImportError) under a too-new torch
    import dgl  # noqa: F401
    HAVE_DGL = True
except Exception:  # pragma: no cover - depends on the environment
    HAVE_DGL = False

from sampling import Adjacency, PinSageSampler, SamplingGraph, random_walk  # noqa: E402


def build(num_pins: int, num_boards: int, num_edges: int, seed: int):
    """(SamplingGraph, DGL heterograph, dense 0/1 adjacency [P, B]) of one random graph; the CSR is
    built with numpy so the test also runs where ``graph`` cannot be imported."""
    import dgl

    rng = np.random.default_rng(seed)
    key = np.unique(rng.integers(0, num_pins, num_edges) * num_boards + rng.integers(0, num_boards, num_edges))
    pins, boards = key // num_boards, key % num_boards

    def csr(rows, cols, n):
        order = np.lexsort((cols, rows))
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return Adjacency(torch.from_numpy(indptr), torch.from_numpy(cols[order]))

    sg = SamplingGraph(csr(pins, boards, num_pins), csr(boards, pins, num_boards), num_pins, num_boards)
    p, b = torch.from_numpy(pins), torch.from_numpy(boards)
    hg = dgl.heterograph({("pin", "saved_to", "board"): (p, b), ("board", "contains", "pin"): (b, p)},
                         num_nodes_dict={"pin": num_pins, "board": num_boards})
    dense = np.zeros((num_pins, num_boards), bool)
    dense[pins, boards] = True
    return sg, hg, dense


def _tvd(a: dict, b: dict) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


@pytest.mark.skipif(not HAVE_DGL, reason="DGL does not import here (it needs torch <= 2.2.1)")
def test_pinsage_matches_dgl():
    import dgl

    g, hg, m = build(1500, 300, 7000, seed=4)
    seeds = torch.arange(0, 1500, 31)
    seeds = seeds[g.pins.degrees(seeds) > 0]
    W, T = 20_000, 10
    r, p, c = PinSageSampler(g, 3, 0.5, W, T, seed=0).visit_counts(seeds)
    ours = [dict() for _ in seeds]
    for ri, pi, ci in zip(r.tolist(), p.tolist(), c.tolist()):
        ours[ri][pi] = ci

    def dgl_counts(seed):
        torch.manual_seed(seed)
        fr = dgl.sampling.PinSAGESampler(hg, "pin", "board", 3, 0.5, W, 10**9)(seeds)
        out = {int(s): {} for s in seeds.tolist()}
        for s_, d_, w_ in zip(*(x.tolist() for x in fr.edges()), fr.edata["weights"].tolist()):
            if s_ != d_:
                out[d_][s_] = w_
        return out

    a, b = dgl_counts(1), dgl_counts(2)
    tvd_ours = np.mean([_tvd(ours[i], a[s]) for i, s in enumerate(seeds.tolist())])
    tvd_ref = np.mean([_tvd(b[s], a[s]) for s in seeds.tolist()])
    assert tvd_ours <= 1.5 * tvd_ref + 0.01
    # Jaccard of top-k at cuts the walks resolve (exact expected counts 4 sigma apart)
    m_pb = m / m.sum(1, keepdims=True).clip(1)
    m_bp = m.T / m.T.sum(1, keepdims=True).clip(1)
    jac = []
    for i, s in enumerate(seeds.tolist()):
        x = np.zeros(g.num_pins)
        x[s] = 1
        e = np.zeros_like(x)
        for t in range(3):
            x = x @ m_pb @ m_bp
            e += 0.5 ** t * x
        e[s] = 0
        order = np.lexsort((np.arange(g.num_pins), -e))
        cuts = [k for k in range(1, T + 1)
                if W * (e[order[k - 1]] - e[order[k]]) > 4 * np.sqrt(W * (e[order[k - 1]] + e[order[k]]))]
        if not cuts:
            continue
        k = max(cuts)
        top = lambda d: set(p_ for p_, _ in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:k])  # noqa: E731
        jac.append(len(top(ours[i]) & top(a[s])) / len(top(ours[i]) | top(a[s])))
    assert len(jac) >= 5 and np.mean(jac) >= 0.8


@pytest.mark.skipif(not HAVE_DGL, reason="DGL does not import here (it needs torch <= 2.2.1)")
def test_random_walk_matches_dgl():
    import dgl

    g, hg, _ = build(1500, 300, 7000, seed=4)
    start = torch.arange(5).repeat_interleave(4000)
    ours = random_walk(g, start, 3, generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(0)
    ref = dgl.sampling.random_walk(hg, start, metapath=["saved_to", "contains"] * 3)[0].numpy()
    torch.manual_seed(1)
    ref2 = dgl.sampling.random_walk(hg, start, metapath=["saved_to", "contains"] * 3)[0].numpy()
    for j in range(1, 7):
        cnt = lambda t: dict(zip(*np.unique(t[:, j], return_counts=True)))  # noqa: E731
        assert _tvd(cnt(ours), cnt(ref)) <= 1.5 * _tvd(cnt(ref2), cnt(ref)) + 0.01
