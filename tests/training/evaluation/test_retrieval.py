"""Retrieval metrics against brute-force loop references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.evaluation.retrieval import (as_positives, board_mate_positives, exact_topk,
                                           expected_first_positive_rank, faiss_available,
                                           image_text_retrieval, pin_retrieval, retrieval_metrics)


def _random_case(seed, Q=23, N=57, D=8, max_pos=4, exclude=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(Q, D, generator=g)
    c = torch.randn(N, D, generator=g)
    rng = np.random.default_rng(seed)
    pos = [rng.choice(N, size=rng.integers(0, max_pos + 1), replace=False).tolist() for _ in range(Q)]
    ex = torch.as_tensor(rng.integers(-1, N, size=Q)) if exclude else None
    if ex is not None:
        pos = [[p for p in ps if p != int(ex[i])] for i, ps in enumerate(pos)]
    return q, c, pos, ex


def _reference(q, c, pos, ex, ks):
    """Plain loops over every query and candidate."""
    rec = {k: [] for k in ks}
    frac = {k: [] for k in ks}
    ndcg = {k: [] for k in ks}
    rr = []
    for i in range(q.shape[0]):
        if not pos[i]:
            continue
        cands = [j for j in range(c.shape[0]) if ex is None or j != int(ex[i])]
        scores = {j: float(q[i] @ c[j]) for j in cands}
        order = sorted(cands, key=lambda j: -scores[j])
        ps = set(pos[i])
        for k in ks:
            top = order[:k]
            h = [1 if j in ps else 0 for j in top]
            rec[k].append(1.0 if sum(h) else 0.0)
            frac[k].append(sum(h) / len(ps))
            dcg = sum(x / math.log2(r + 2) for r, x in enumerate(h))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(ps), k)))
            ndcg[k].append(dcg / idcg)
        first = next(r for r, j in enumerate(order) if j in ps)
        rr.append(1.0 / (first + 1))
    out = {}
    for k in ks:
        out[f"recall@{k}"] = np.mean(rec[k])
        out[f"recall_frac@{k}"] = np.mean(frac[k])
        out[f"ndcg@{k}"] = np.mean(ndcg[k])
    out["mrr"] = np.mean(rr)
    out["num_queries"] = len(rr)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exclude", [False, True])
def test_metrics_match_bruteforce(seed, exclude):
    q, c, pos, ex = _random_case(seed, exclude=exclude)
    ks = (1, 5, 10)
    got = retrieval_metrics(q, c, pos, ks, exclude=ex, backend="torch", query_chunk=5, corpus_chunk=7)
    ref = _reference(q, c, pos, ex, ks)
    assert got["num_queries"] == ref["num_queries"]
    for key, v in ref.items():
        assert got[key] == pytest.approx(v, abs=1e-9), key


def test_chunked_equals_unchunked():
    q, c, pos, ex = _random_case(5, Q=40, N=120, exclude=True)
    a = retrieval_metrics(q, c, pos, (1, 3, 10), exclude=ex, backend="torch", query_chunk=3, corpus_chunk=11)
    b = retrieval_metrics(q, c, pos, (1, 3, 10), exclude=ex, backend="torch", query_chunk=1000, corpus_chunk=10**6)
    assert a == pytest.approx(b)
    s1, i1 = exact_topk(q, c, 10, ex, query_chunk=3, corpus_chunk=11, backend="torch")
    s2, i2 = exact_topk(q, c, 10, ex, query_chunk=1000, corpus_chunk=10**6, backend="torch")
    assert torch.equal(i1, i2)
    assert torch.allclose(s1, s2)
    full = q @ c.T
    full[torch.arange(40)[ex >= 0], ex[ex >= 0]] = float("-inf")
    assert torch.equal(i2, torch.topk(full, 10, dim=1).indices)


@pytest.mark.skipif(not faiss_available(), reason="faiss not importable")
def test_faiss_equals_torch():
    q, c, pos, ex = _random_case(7, Q=30, N=200, D=16, exclude=True)
    c[3] = 0  # a zero row is never retrieved by either backend
    st, it = exact_topk(q, c, 10, ex, backend="torch")
    sf, if_ = exact_topk(q, c, 10, ex, backend="faiss")
    assert torch.equal(it, if_)
    assert torch.allclose(st, sf, atol=1e-5)
    assert not (it == 3).any()
    a = retrieval_metrics(q, c, pos, exclude=ex, backend="torch")
    b = retrieval_metrics(q, c, pos, exclude=ex, backend="faiss")
    assert a == pytest.approx(b)


def test_tie_aware_mrr_hand_made():
    # corpus scores for the single query: [1, 1, 1, 0.5]; row 0 is the positive, tied with 2 negatives
    q = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    r = expected_first_positive_rank(q, c, [[0]])
    assert float(r[0]) == pytest.approx(2.0)               # positions 1..3 equally likely
    # two tied positives among 2 tied negatives: expected first-positive position 1 + 2/3
    c2 = torch.tensor([[1.0, 0.0]] * 4 + [[0.5, 0.0]])
    assert float(expected_first_positive_rank(q, c2, [[0, 1]])[0]) == pytest.approx(1 + 2 / 3)
    # one strictly better negative, then a tie of positive with one negative
    c3 = torch.tensor([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert float(expected_first_positive_rank(q, c3, [[2]])[0]) == pytest.approx(2.5)
    m = retrieval_metrics(q, c3, [[2]], ks=(1,), backend="torch")
    assert m["mrr"] == pytest.approx(1 / 2.5)
    # excluding the better negative (as the query itself) removes it from the candidates
    assert float(expected_first_positive_rank(q, c3, [[2]], exclude=torch.tensor([0]))[0]) == pytest.approx(1.5)


def test_queries_without_positives_and_zero_rows():
    q = torch.eye(3)
    c = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0]])
    m = retrieval_metrics(q, c, [[0], [1], []], ks=(1, 3), backend="torch")
    assert m["num_queries"] == 2
    assert m["recall@1"] == 0.5        # query 1's only positive is a zero row: never retrieved
    assert m["recall@3"] == 0.5
    _, idx = exact_topk(q, c, 3, backend="torch")
    assert not (idx == 1).any()
    empty = retrieval_metrics(q, c, [[], [], []], ks=(1,))
    assert empty["num_queries"] == 0 and math.isnan(empty["recall@1"])


def test_image_text_multi_positive():
    # texts 0 and 1 both describe image 0; text 2 describes image 1
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    m = image_text_retrieval(image, text, text_to_image=[[0], [0], [1]], ks=(1, 2))
    assert m["t2i_recall@1"] == pytest.approx(2 / 3)
    assert m["t2i_recall@2"] == 1.0
    # image 0's positives {text 0, text 1}: text 0 is top-1 -> hit; image 1 -> text 2 or 1 (0.9 vs 0.8)
    assert m["i2t_recall@1"] == 1.0
    assert m["i2t_recall_frac@1"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["i2t_recall_frac@2"] == 1.0
    ident = image_text_retrieval(image, image, ks=(1,))
    assert ident["t2i_recall@1"] == 1.0 and ident["i2t_recall@1"] == 1.0


def test_positives_transpose_and_formats():
    p = as_positives([[2, 0], [], [1]])
    assert p.indptr.tolist() == [0, 2, 2, 3] and p.indices.tolist() == [0, 2, 1]
    t = p.transpose(3)
    assert [t.indices[t.indptr[i]:t.indptr[i + 1]].tolist() for i in range(3)] == [[0], [2], [0]]
    assert as_positives((p.indptr.numpy(), p.indices.numpy())).indices.tolist() == [0, 2, 1]


def test_board_mate_positives_and_pin_retrieval():
    # board 0: pins 0, 1, 2; board 1: pins 2, 3; query edges: (0, b0), (3, b1)
    mp, mb = [0, 1, 2, 2, 3], [0, 0, 0, 1, 1]
    pins, pos = board_mate_positives([0, 3], [0, 1], mp, mb, num_pins=5)
    assert pins.tolist() == [0, 3]
    assert pos.indices[pos.indptr[0]:pos.indptr[1]].tolist() == [1, 2]
    assert pos.indices[pos.indptr[1]:pos.indptr[2]].tolist() == [2]
    emb = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9], [-1.0, 0]])
    m = pin_retrieval(emb, pins, pos, ks=(1,), backend="torch")
    assert m["board_recall@1"] == 1.0 and m["board_mrr"] == 1.0 and m["board_num_queries"] == 2
