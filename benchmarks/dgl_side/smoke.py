"""Smoke test of the DGL side environment (run with .venv-dgl/bin/python).

Builds a tiny pin-board heterograph and runs the two DGL samplers our own are compared against:
``dgl.sampling.random_walk`` (metapath pin -> board -> pin) and ``dgl.sampling.PinSAGESampler``.
Prints versions and results; exits non-zero on any failure.
"""
from __future__ import annotations

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import numpy  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    pins = torch.tensor([0, 0, 1, 2, 3, 3, 4])
    boards = torch.tensor([0, 1, 1, 2, 0, 2, 1])
    g = dgl.heterograph({
        ("pin", "saved_to", "board"): (pins, boards),
        ("board", "has", "pin"): (boards, pins),
    })
    g.create_formats_()
    traces, types = dgl.sampling.random_walk(g, torch.arange(5), metapath=["saved_to", "has"] * 2)
    assert traces.shape == (5, 5), traces.shape
    sampler = dgl.sampling.PinSAGESampler(g, "pin", "board", num_traversals=3, termination_prob=0.5,
                                          num_random_walks=50, num_neighbors=2)
    frontier = sampler(torch.tensor([0, 1, 3]))
    src, dst = frontier.edges()
    assert frontier.num_edges() > 0 and "weights" in frontier.edata
    print(f"dgl {dgl.__version__}  torch {torch.__version__}  numpy {numpy.__version__}  "
          f"cuda_available={torch.cuda.is_available()}")
    print("random_walk traces (pin, board, pin, board, pin):", traces.tolist())
    print("PinSAGESampler neighbors (src -> dst, weight):",
          list(zip(src.tolist(), dst.tolist(), frontier.edata["weights"].tolist())))
    print("formats:", g.formats())
    print("DGL side env OK")


if __name__ == "__main__":
    main()
