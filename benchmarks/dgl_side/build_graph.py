"""DGL's graph build on the benchmark edges (run with the side env: .venv-dgl/bin/python).

    .venv-dgl/bin/python benchmarks/dgl_side/build_graph.py --data DIR [--variant two_relations]

Reads the edge arrays that ``benchmarks/powerlaw_edges.py`` dumps next to the Parquet files
(``edges_pins.npy``, ``edges_boards.npy``; reading is not timed, so Parquet decoding is excluded),
then times building the graph with both directions and its sparse formats materialized:

  two_relations  ``dgl.heterograph`` with ('pin','saved_to','board') and ('board','has','pin'),
                 as DGL's PinSAGE example builds it, then ``create_formats_()`` (COO, CSR and
                 CSC of both relations)
  one_relation   one relation ('pin','saved_to','board') with formats ['csr', 'csc']: the CSR
                 of each direction, the least DGL needs for samplers going both ways

Prints one JSON object: build seconds (wall, and CPU of all threads), the byte size of the two direction CSRs (indptr + indices
+ edge ids, as DGL keeps them), peak RSS (``ru_maxrss``) and the RSS before the build.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--variant", choices=("two_relations", "one_relation"), default="two_relations")
    args = ap.parse_args()
    meta = json.loads((args.data / "meta.json").read_text())
    num_pins, num_boards = meta["num_pins"], meta["num_boards"]
    pins = torch.from_numpy(np.load(args.data / "edges_pins.npy"))
    boards = torch.from_numpy(np.load(args.data / "edges_boards.npy"))
    rss_before = _rss_mb()

    t0, c0 = time.perf_counter(), time.process_time()
    if args.variant == "two_relations":
        g = dgl.heterograph({("pin", "saved_to", "board"): (pins, boards),
                             ("board", "has", "pin"): (boards, pins)},
                            num_nodes_dict={"pin": num_pins, "board": num_boards})
        t1 = time.perf_counter()
        g.create_formats_()
        direction_csrs = [g.adj_tensors("csr", "saved_to"), g.adj_tensors("csr", "has")]
    else:
        g = dgl.heterograph({("pin", "saved_to", "board"): (pins, boards)},
                            num_nodes_dict={"pin": num_pins, "board": num_boards})
        g = g.formats(["csr", "csc"])
        t1 = time.perf_counter()
        g.create_formats_()
        direction_csrs = [g.adj_tensors("csr"), g.adj_tensors("csc")]
    t2, c2 = time.perf_counter(), time.process_time()

    num_edges = int(pins.shape[0])
    topo = sum(int(t.numel() * t.element_size()) for csr in direction_csrs for t in csr)
    print(json.dumps({
        "build_s": t2 - t0,
        "build_cpu_s": c2 - c0,
        "construct_s": t1 - t0,
        "create_formats_s": t2 - t1,
        "num_edges": num_edges,
        "formats": g.formats()["created"],
        "topology_bytes_per_edge": topo / num_edges,
        "index_dtype": str(direction_csrs[0][1].dtype).replace("torch.", ""),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
        "threads": torch.get_num_threads(),
        "versions": {"dgl": dgl.__version__, "torch": torch.__version__, "numpy": np.__version__},
    }))


if __name__ == "__main__":
    main()
