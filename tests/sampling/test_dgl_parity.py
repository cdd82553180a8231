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

from sampling import PinSageSampler, random_walk  # noqa: E402


def _tvd(a: dict, b: dict) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


@pytest.mark.skipif(not HAVE_DGL, reason="DGL does not import here (it needs torch <= 2.2.1)")
def test_pinsage_matches_dgl(make_graph):
    import dgl

    g = make_graph(1500, 300, 7000, seed=4, weights=False)
    hg = g.to_dgl()
    seeds = torch.arange(0, 1500, 31)
    seeds = seeds[g.pin_degrees()[seeds] > 0]
    W, T = 20_000, 10
    r, p, c = PinSageSampler(g, 3, 0.5, W, T, seed=0).visit_counts(seeds)
    ours = [dict() for _ in seeds]
    for ri, pi, ci in zip(r.tolist(), p.tolist(), c.tolist()):
        ours[ri][pi] = ci

    def dgl_counts(seed):
        torch.manual_seed(seed)
        fr = dgl.sampling.PinSAGESampler(hg, "pin", "board", 3, 0.5, W, 10**9)(seeds.to(hg.idtype))
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
    m = g.to_scipy("pin").toarray() != 0
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
def test_random_walk_matches_dgl(make_graph):
    import dgl

    g = make_graph(1500, 300, 7000, seed=4, weights=False)
    hg = g.to_dgl()
    start = torch.arange(5).repeat_interleave(4000)
    ours = random_walk(g, start, 3, generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(0)
    ref = dgl.sampling.random_walk(hg, start.to(hg.idtype), metapath=["saved_to", "contains"] * 3)[0].numpy()
    torch.manual_seed(1)
    ref2 = dgl.sampling.random_walk(hg, start.to(hg.idtype), metapath=["saved_to", "contains"] * 3)[0].numpy()
    for j in range(1, 7):
        cnt = lambda t: dict(zip(*np.unique(t[:, j], return_counts=True)))  # noqa: E731
        assert _tvd(cnt(ours), cnt(ref)) <= 1.5 * _tvd(cnt(ref2), cnt(ref)) + 0.01
