"""DGL's samplers beside ours, in the DGL side environment (run with .venv-dgl/bin/python).

Two commands:

  serve --edges DIR [--threads N]
      The DGL half of ``benchmarks/bench_sampling.py``. Reads the *deduplicated* edge arrays the
      benchmark wrote (``DIR/edges_pins.npy``, ``edges_boards.npy``, ``meta.json``), builds the
      heterograph DGL's PinSAGE example builds (('pin','saved_to','board') and
      ('board','contains','pin'), all formats materialized), prints one JSON line
      ``{"ready": ...}`` and then answers one JSON command per stdin line with one JSON line:
        {"op": "random_walk", "num_seeds": n, "num_hops": h, "seed": s}
            dgl.sampling.random_walk, metapath ['saved_to', 'contains'] * h
        {"op": "pinsage", "num_seeds": n, "num_traversals": t, "termination_prob": p,
         "num_random_walks": w, "num_neighbors": k, "seed": s}
            dgl.sampling.PinSAGESampler (built once per parameter set, outside the clock)
        {"op": "fanout", "num_seeds": n, "fanouts": [10, 5], "weighted": false, "seed": s}
            dgl.dataloading.NeighborSampler.sample_blocks: hop 1 pins <- 'contains' (10 boards
            per seed), hop 2 boards <- 'saved_to' (5 pins per board), and so on alternating for
            longer fanout lists; blocks relabeled. weighted: prob="weight" (the edge weights of
            DIR/edges_weights.npy, which must then exist)
        {"op": "quit"}
      Seeds are ``numpy.random.default_rng(seed).integers(0, P, n)``: the same as ours.
      Replies: {"seconds": wall time of the call, "output": a small size summary}.

  parity --out FILE.json [--pins P --boards B --edges E]
      Runs our samplers (imported from the repository: ``sampling`` only needs torch, numpy and
      PyYAML, so it runs on torch 2.2.1 here; the CSR is built with numpy, since the side env's
      pyarrow cannot import ``graph``) and DGL's on the same power-law graph and compares them:
        * random walks: per trace position, the total variation distance (TVD) between the
          distributions of visited nodes, ours vs DGL, against DGL vs DGL with another seed;
        * PinSAGE: per seed, the TVD between full visit-count distributions (DGL asked for
          every visited pin, the seed dropped: DGL keeps it, we exclude it), and the Jaccard
          index of the top-T sets, each against DGL's own run-to-run values. Visit counts tie in
          expectation (pins on the same boards are symmetric), so the judged Jaccard is taken,
          per seed, at the largest cut k <= T that the walks resolve (exact expected visit
          counts of ranks k and k + 1 more than 4 standard deviations apart; seeds with no
          such cut are left out): top-k of ours vs top-k of DGL, and each vs the exact top-k;
        * fanout [4, 3] from 40 seed pins, uniform and weighted, without replacement: per-edge
          inclusion frequencies over ``--fanout-calls`` calls, L1 ours vs DGL against DGL vs
          DGL, and (uniform) each seed edge against the exact min(k, d) / d.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def build_heterograph(pins: np.ndarray, boards: np.ndarray, num_pins: int, num_boards: int,
                      weights: np.ndarray | None = None):
    p, b = torch.from_numpy(pins.astype(np.int64)), torch.from_numpy(boards.astype(np.int64))
    g = dgl.heterograph({("pin", "saved_to", "board"): (p, b), ("board", "contains", "pin"): (b, p)},
                        num_nodes_dict={"pin": num_pins, "board": num_boards})
    if weights is not None:
        w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
        g.edges["saved_to"].data["weight"] = w
        g.edges["contains"].data["weight"] = w
    g.create_formats_()
    return g


def seeds_for(seed: int, n: int, num_pins: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, num_pins, n))


# ------------------------------------------------------------------------------ serve
def serve(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    dgl.utils.set_num_threads(args.threads)
    meta = json.loads((args.edges / "meta.json").read_text())
    P, B = meta["num_pins"], meta["num_boards"]
    t0 = time.perf_counter()
    wfile = args.edges / "edges_weights.npy"
    g = build_heterograph(np.load(args.edges / "edges_pins.npy"), np.load(args.edges / "edges_boards.npy"), P, B,
                          np.load(wfile) if wfile.exists() else None)
    build_s = time.perf_counter() - t0
    samplers: dict = {}
    print(json.dumps({"ready": True, "build_s": build_s, "num_edges": int(g.num_edges("saved_to")),
                      "threads": torch.get_num_threads(), "dgl_threads": dgl.utils.get_num_threads(),
                      "versions": {"dgl": dgl.__version__, "torch": torch.__version__, "numpy": np.__version__}}),
          flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        seeds = seeds_for(cmd["seed"], cmd["num_seeds"], P)
        if op == "random_walk":
            mp = ["saved_to", "contains"] * cmd["num_hops"]
            t0 = time.perf_counter()
            traces, _ = dgl.sampling.random_walk(g, seeds, metapath=mp)
            dt = time.perf_counter() - t0
            out = {"shape": list(traces.shape)}
        elif op == "pinsage":
            key = (cmd["num_traversals"], cmd["termination_prob"], cmd["num_random_walks"], cmd["num_neighbors"])
            if key not in samplers:
                samplers[key] = dgl.sampling.PinSAGESampler(g, "pin", "board", *key)
            t0 = time.perf_counter()
            frontier = samplers[key](seeds)
            dt = time.perf_counter() - t0
            out = {"edges": int(frontier.num_edges())}
        elif op == "fanout":
            weighted = bool(cmd.get("weighted", False))
            key = ("fanout", tuple(cmd["fanouts"]), weighted)
            if key not in samplers:
                # DGL lists layers from the input side: the last hop first. Hop i (from 1) samples
                # the boards of pins when odd ('contains' edges into pins), else the pins of boards.
                hops = [{"contains": f, "saved_to": 0} if i % 2 == 0 else {"saved_to": f, "contains": 0}
                        for i, f in enumerate(cmd["fanouts"])]
                samplers[key] = dgl.dataloading.NeighborSampler(hops[::-1], prob="weight" if weighted else None)
            t0 = time.perf_counter()
            input_nodes, _, blocks = samplers[key].sample_blocks(g, {"pin": seeds})
            dt = time.perf_counter() - t0
            out = {"edges": [int(sum(b.num_edges(et) for et in b.canonical_etypes)) for b in blocks]}
        else:
            raise ValueError(f"unknown op {op!r}")
        print(json.dumps({"seconds": dt, "output": out}), flush=True)


# ------------------------------------------------------------------------------ parity
def _tvd(a: dict, b: dict) -> float:
    na, nb = sum(a.values()), sum(b.values())
    keys = set(a) | set(b)
    if na == 0 or nb == 0:
        return float("nan")
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in keys)


def _csr(rows: np.ndarray, cols: np.ndarray, n: int, weights: np.ndarray | None = None):
    """Our ``Adjacency`` of the edges (rows, cols), rows sorted, cols ascending within each row;
    ``weights`` (float32 [E], aligned with the input edges) follow their edges."""
    from sampling import Adjacency
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    w = None if weights is None else torch.from_numpy(np.ascontiguousarray(weights[order], dtype=np.float32))
    return Adjacency(torch.from_numpy(indptr), torch.from_numpy(cols[order].astype(np.int64)), w)


def _fanout_parity(pins: np.ndarray, boards: np.ndarray, P: int, B: int, args: argparse.Namespace) -> dict:
    """Per-edge inclusion frequencies of fanout [k1, k2] from the same seeds, ours vs DGL's
    ``NeighborSampler``, over ``--fanout-calls`` calls: uniform and weighted, without replacement.

    Edge ids are pin-major positions on both sides (DGL's edges were added in (pin, board) order,
    so its EIDs of either relation are our edge ids). Hop 1: the seeds' (pin -> board) draws; hop
    2: the draws of the boards hop 1 reached. Per hop, L1(ours, DGL) between the frequency vectors
    against DGL's own run-to-run L1 (another seed); for uniform hop 1 also the largest deviation
    from the exact inclusion probability min(k, d) / d, in standard deviations.
    """
    from sampling import BOARD_TO_PIN, PIN_TO_BOARD, FanoutSampler, SamplingGraph

    E = pins.shape[0]
    k1, k2 = 4, 3
    rng = np.random.default_rng(3)
    w = (0.2 + rng.random(E) * 2).astype(np.float32) ** 2            # spread-out positive weights
    g = build_heterograph(pins, boards, P, B, w)
    sg = SamplingGraph(_csr(pins, boards, P, w), _csr(boards, pins, B, w), P, B)
    deg = np.bincount(pins, minlength=P)
    seeds = torch.from_numpy(np.flatnonzero(deg > k1)[:: max(1, int((deg > k1).sum()) // 40)][:40])
    R = args.fanout_calls
    out: dict = {}
    for weighted in (False, True):
        ours = FanoutSampler(sg, [k1, k2], weighted=weighted, seed=0)
        hop_ours = [np.zeros(E), np.zeros(E)]
        for _ in range(R):
            o = ours.sample(seeds)
            hop_ours[0][o.edge[BOARD_TO_PIN].numpy()] += 1
            hop_ours[1][o.edge[PIN_TO_BOARD].numpy()] += 1
        ns = dgl.dataloading.NeighborSampler([{"saved_to": k2, "contains": 0}, {"contains": k1, "saved_to": 0}],
                                             prob="weight" if weighted else None)

        def dgl_freq(seed: int) -> list[np.ndarray]:
            dgl.seed(seed)
            f = [np.zeros(E), np.zeros(E)]
            for _ in range(R):
                _, _, blocks = ns.sample_blocks(g, {"pin": seeds})
                f[0][blocks[1].edges["contains"].data[dgl.EID].numpy()] += 1
                f[1][blocks[0].edges["saved_to"].data[dgl.EID].numpy()] += 1
            return f

        da, db = dgl_freq(10), dgl_freq(11)
        rep: dict = {"seeds": int(seeds.numel()), "fanouts": [k1, k2], "calls": R}
        ok = True
        for h in (0, 1):
            l1_ours = float(np.abs(hop_ours[h] - da[h]).sum() / R)
            l1_ref = float(np.abs(db[h] - da[h]).sum() / R)
            rep[f"hop{h + 1}_l1_ours_dgl"], rep[f"hop{h + 1}_l1_dgl_dgl"] = l1_ours, l1_ref
            ok &= l1_ours <= 1.25 * l1_ref + 0.01
        if not weighted:
            seed_edges = np.flatnonzero(np.isin(pins, seeds.numpy()))
            d = deg[pins[seed_edges]]
            p_exact = np.minimum(k1, d) / d
            sd = np.sqrt(p_exact * (1 - p_exact) / R)
            z = lambda f: float(np.max(np.abs(f[seed_edges] / R - p_exact) / sd))  # noqa: E731
            rep["hop1_max_z_ours"], rep["hop1_max_z_dgl"] = z(hop_ours[0]), z(da[0])
            ok &= rep["hop1_max_z_ours"] < 5
        rep["matches"] = bool(ok)
        out["weighted" if weighted else "uniform"] = rep
    return out


def parity(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from powerlaw_edges import generate_edges
    from sampling import PinSageSampler, SamplingGraph, random_walk

    torch.set_num_threads(args.threads)
    pins, boards, _ = generate_edges(args.pins, args.boards, args.edges, seed=0)
    key = np.unique(pins * args.boards + boards)                       # deduplicate, as the store does
    pins, boards = key // args.boards, key % args.boards
    P, B = args.pins, args.boards
    g = build_heterograph(pins, boards, P, B)
    sg = SamplingGraph(_csr(pins, boards, P), _csr(boards, pins, B), P, B)
    report: dict = {"graph": {"pins": P, "boards": B, "edges": int(key.size)},
                    "versions": {"dgl": dgl.__version__, "torch": torch.__version__}}

    # --- random walks: node distribution per trace position, many walks from few seeds
    rw_seeds = seeds_for(1, 20, P)
    reps, hops = 5000, 3
    start = rw_seeds.repeat_interleave(reps)
    ours = random_walk(sg, start, hops, generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(0)
    dgl_a = dgl.sampling.random_walk(g, start, metapath=["saved_to", "contains"] * hops)[0].numpy()
    torch.manual_seed(1)
    dgl_b = dgl.sampling.random_walk(g, start, metapath=["saved_to", "contains"] * hops)[0].numpy()
    per_pos = []
    for j in range(1, 2 * hops + 1):
        t_ours, t_ref = [], []
        for i in range(len(rw_seeds)):
            sl = slice(i * reps, (i + 1) * reps)
            cnt = lambda col: dict(zip(*np.unique(col[sl, j], return_counts=True)))  # noqa: E731
            a, b, c = cnt(ours), cnt(dgl_a), cnt(dgl_b)
            t_ours.append(_tvd(a, b))
            t_ref.append(_tvd(c, b))
        per_pos.append({"position": j, "tvd_ours_dgl": float(np.mean(t_ours)), "tvd_dgl_dgl": float(np.mean(t_ref))})
    report["random_walk"] = {"seeds": len(rw_seeds), "walks_per_seed": reps, "per_position": per_pos}

    # --- PinSAGE: visit-count distributions and top-T sets
    T, W, trav, term = args.num_neighbors, args.num_random_walks, 3, 0.5
    deg = np.bincount(pins, minlength=P)
    ps_seeds = torch.unique(seeds_for(2, args.num_seeds, P))
    ps_seeds = ps_seeds[torch.from_numpy(deg[ps_seeds.numpy()] > 0)]
    ours_s = PinSageSampler(sg, trav, term, W, T, seed=0)
    r, p, c = ours_s.visit_counts(ps_seeds)
    ours_full = [dict() for _ in range(len(ps_seeds))]
    for ri, pi, ci in zip(r.tolist(), p.tolist(), c.tolist()):
        ours_full[ri][pi] = ci
    nb = ours_s.sample(ps_seeds)
    ours_top = [set(x for x in row if x >= 0) for row in nb.neighbors.tolist()]

    def dgl_counts(seed: int, k: int):
        torch.manual_seed(seed)
        fr = dgl.sampling.PinSAGESampler(g, "pin", "board", trav, term, W, k)(ps_seeds)
        src, dst = (x.numpy() for x in fr.edges())
        w = fr.edata["weights"].numpy()
        out = {int(s): {} for s in ps_seeds.tolist()}
        for s_, d_, w_ in zip(src, dst, w):
            if s_ != d_:
                out[int(d_)][int(s_)] = int(w_)
        return out

    full_a, full_b = dgl_counts(10, 10**9), dgl_counts(11, 10**9)

    def topk(counts: dict, k: int) -> set:
        # DGL's order: count desc, larger id first
        return set(p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0]))[:k])

    # Exact expected visits per walk: E = sum_t (1 - term)^(t-1) e_s M^t, M = pin -> pin transition.
    # A seed's top-T is *resolvable* with W walks when the expected counts of ranks T and T + 1
    # differ by more than 4 standard deviations of their difference (Poisson approximation);
    # elsewhere the T-th place is a tie in expectation and any two correct samplers disagree.
    a = np.zeros((P, B))
    a[pins, boards] = 1.0
    m_pb = a / np.maximum(a.sum(1, keepdims=True), 1)
    m_bp = a.T / np.maximum(a.T.sum(1, keepdims=True), 1)
    rows, resolvable = [], 0
    jac = lambda x, y: len(x & y) / max(len(x | y), 1)  # noqa: E731
    for i, s in enumerate(ps_seeds.tolist()):
        x = np.zeros(P)
        x[s] = 1.0
        e = np.zeros(P)
        for t in range(trav):
            x = (x @ m_pb) @ m_bp
            e += (1 - term) ** t * x
        e[s] = 0.0
        order = np.lexsort((np.arange(P), -e))
        # the largest cut k <= T with ranks k and k + 1 resolvable (0: none)
        cuts = [k for k in range(1, T + 1)
                if W * (e[order[k - 1]] - e[order[k]]) > 4 * np.sqrt(W * (e[order[k - 1]] + e[order[k]]))]
        k = max(cuts) if cuts else 0
        ok = k == T
        resolvable += ok
        da, db = full_a[s], full_b[s]
        ta, tb = topk(da, T), topk(db, T)
        row = {"seed": s, "resolvable": bool(ok), "cut": k, "tvd_ours_dgl": _tvd(ours_full[i], da),
               "tvd_dgl_dgl": _tvd(db, da), "jaccard_ours_dgl": jac(ours_top[i], ta), "jaccard_dgl_dgl": jac(tb, ta)}
        if k:
            exact_k = set(order[:k].tolist())
            ours_k = set(p_ for p_, _ in sorted(ours_full[i].items(), key=lambda kv: (-kv[1], kv[0]))[:k])
            dgl_k = topk(da, k)
            row.update({"cut_jaccard_ours_dgl": jac(ours_k, dgl_k), "cut_jaccard_dgl_dgl": jac(topk(db, k), dgl_k),
                        "cut_jaccard_ours_exact": jac(ours_k, exact_k), "cut_jaccard_dgl_exact": jac(dgl_k, exact_k)})
        rows.append(row)
    cut_rows = [r_ for r_ in rows if r_["cut"]]
    cmean = lambda k: float(np.mean([r_[k] for r_ in cut_rows])) if cut_rows else float("nan")  # noqa: E731
    mean = lambda k, only=False: float(np.mean([r_[k] for r_ in rows if r_["resolvable"] or not only]))  # noqa: E731
    report["pinsage"] = {"seeds": len(rows), "resolvable_seeds": int(resolvable), "num_random_walks": W,
                         "num_traversals": trav, "termination_prob": term, "num_neighbors": T,
                         "mean_tvd_ours_dgl": mean("tvd_ours_dgl"), "mean_tvd_dgl_dgl": mean("tvd_dgl_dgl"),
                         "mean_jaccard_ours_dgl_all_seeds": mean("jaccard_ours_dgl"),
                         "mean_jaccard_dgl_dgl_all_seeds": mean("jaccard_dgl_dgl"),
                         "resolvable_cut_seeds": len(cut_rows),
                         "mean_resolvable_cut": cmean("cut"),
                         "mean_jaccard_ours_dgl": cmean("cut_jaccard_ours_dgl"),
                         "mean_jaccard_dgl_dgl": cmean("cut_jaccard_dgl_dgl"),
                         "mean_jaccard_ours_exact": cmean("cut_jaccard_ours_exact"),
                         "mean_jaccard_dgl_exact": cmean("cut_jaccard_dgl_exact")}
    report["fanout"] = _fanout_parity(pins, boards, P, B, args)
    fo_ok = all(v["matches"] for v in report["fanout"].values())
    rw_ok = all(x["tvd_ours_dgl"] <= 1.5 * x["tvd_dgl_dgl"] + 0.01 for x in per_pos)
    ps = report["pinsage"]
    ps_ok = ps["mean_tvd_ours_dgl"] <= 1.5 * ps["mean_tvd_dgl_dgl"] + 0.01 and ps["mean_jaccard_ours_dgl"] >= 0.8
    report["verdict"] = {"random_walk_matches": rw_ok, "pinsage_matches": ps_ok, "fanout_matches": fo_ok,
                         "rule": "TVD(ours, DGL) <= 1.5 * TVD(DGL, DGL') + 0.01; mean top-T Jaccard >= 0.8; "
                                 "fanout: L1(ours, DGL) <= 1.25 * L1(DGL', DGL) + 0.01 per hop and, uniform, "
                                 "no hop-1 inclusion frequency beyond 5 sigma of min(k, d) / d"}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    if not (rw_ok and ps_ok and fo_ok):
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--edges", type=Path, required=True)
    s.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("parity")
    p.add_argument("--out", type=Path)
    p.add_argument("--pins", type=int, default=3_000)
    p.add_argument("--boards", type=int, default=600)
    p.add_argument("--edges", type=int, default=15_000)
    p.add_argument("--num-seeds", type=int, default=100)
    p.add_argument("--num-random-walks", type=int, default=20_000)
    p.add_argument("--num-neighbors", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fanout-calls", type=int, default=3000)
    args = ap.parse_args()
    serve(args) if args.cmd == "serve" else parity(args)


if __name__ == "__main__":
    main()
