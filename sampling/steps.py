"""One random step: draw a neighbor of each node, uniformly or by edge weight, optionally skipping
excluded edges. The hot path of every sampler here; vectorized torch on the tensors' device.

Every draw consumes exactly one uniform number ``u`` in [0, 1) per node (float64, so that
``floor(u * degree)`` is exactly uniform for any degree below 2**52), supplied by the caller from
an explicit ``torch.Generator``.

  uniform:   position = start + floor(u * degree)
  weighted:  position = searchsorted(C, C[start] + u * W) - 1, with C the float64 cumulative edge
             weights of the direction and W the node's total weight
  excluding: the same draw over the node's *kept* edges only (degree minus excluded ones, or total
             minus excluded weight), mapped back to a CSR position with one ``searchsorted`` over the
             excluded set; see ``DirectionExclusion``. Exact: every kept edge has probability 1/d'
             (or w/W'); excluded edges have probability 0.
"""
from __future__ import annotations

import torch

from sampling.adjacency import Adjacency, DirectionExclusion

__all__ = ["uniform", "draw_positions"]

# A node whose kept weight is below this fraction of its total weight has no kept edge: float64
# round-off of (total - excluded) must not make an all-excluded node look alive.
_REL_EPS = 1e-12


def uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """float64 [n] uniform in [0, 1) from ``generator`` (on ``device``)."""
    return torch.rand(n, generator=generator, dtype=torch.float64, device=device)


def draw_positions(adj: Adjacency, nodes: torch.Tensor, u: torch.Tensor, *, weighted: bool = False,
                   exclude: DirectionExclusion | None = None, check: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw one edge out of each node.

    adj: the direction's CSR; nodes: int32|int64 [n] valid node ids; u: float64 [n] in [0, 1).
    Returns (positions int64 [n]: CSR positions in ``adj`` (the neighbor is
    ``adj.indices[position]``), ok bool [n] or None). ``ok`` is False for nodes without any
    (kept, positive-weight) edge; their position is 0 (a safe index, not an edge of theirs).
    With ``check=False`` the caller guarantees every node has an edge: ``ok`` is None and the
    bounds work is skipped.
    """
    if exclude is not None and exclude.size == 0:
        exclude = None
    indptr = adj.indptr
    s = indptr.index_select(0, nodes)
    e = indptr.index_select(0, nodes + 1)
    if not weighted:
        d = e - s
        if exclude is None:
            pos = s + (u * d).long()
            ok = None
            if check:
                ok = d > 0
                pos = torch.where(ok, pos, torch.zeros_like(pos))
            return pos, ok
        x, z = exclude.pos, exclude.z
        js = torch.searchsorted(x, s)
        je = torch.searchsorted(x, e)
        d = d - (je - js)
        t = s - js + (u * d).long()               # rank among kept positions, in kept coordinates
        pos = t + torch.searchsorted(z, t, right=True)
        ok = d > 0
        pos = torch.where(ok, pos, torch.zeros_like(pos))
        return pos, (ok if check else None)

    cum = adj.cumulative_weights()
    cs = cum.index_select(0, s)
    total = cum.index_select(0, e) - cs
    if exclude is None:
        target = cs + u * total
        pos = torch.searchsorted(cum, target, right=True) - 1
        ok = total > 0
    else:
        cx, y = exclude.weighted_tables(adj)
        js = torch.searchsorted(exclude.pos, s)
        je = torch.searchsorted(exclude.pos, e)
        kept = total - (cx.index_select(0, je) - cx.index_select(0, js))
        ok = (je - js < e - s) & (kept > _REL_EPS * total)
        target = cs - cx.index_select(0, js) + u * kept.clamp_min(0)
        jj = torch.searchsorted(y, target, right=True)
        pos = torch.searchsorted(cum, target + cx.index_select(0, jj), right=True) - 1
    pos = torch.minimum(torch.maximum(pos, s), e - 1)
    pos = torch.where(ok, pos, torch.zeros_like(pos))
    return pos, ok
