"""``pinclip ann-index EMB_DIR --out INDEX_DIR``: a faiss ANN index over exported embeddings.

EMB_DIR is the output of ``pinclip embed``; one of its matrices (``--which``: fused, image or
text; L2-normalized [P, D]) is indexed for inner-product (cosine) search, faiss id = internal pin
id. ``--kind flat`` is exact (``IndexFlatIP``, 4 D bytes per pin); ``--kind ivfpq`` (default) is
``IndexIVFPQ``: ``--nlist`` k-means lists, ``--m`` product-quantizer codes of ``--nbits`` bits
per vector, ``--nprobe`` lists scanned per query, trained on ``--train-size`` vectors sampled
with ``--seed``. Unset parameters get defaults from the number of pins (``training.ann.
default_ivfpq_params``: nlist ~ 4 sqrt(P), m = D / 8, nbits 8, nprobe = nlist / 64).

INDEX_DIR (new, empty or an earlier index, which is replaced atomically; anything else is
refused) holds ``index.faiss`` and ``manifest.json``; open it with
``training.ann.load_index``. ``--recall-queries Q`` also measures recall@10 against exact
search for Q of the indexed pins sampled with ``--seed`` (each query's own row counts on both
sides) and stores it in the manifest. Needs the optional extra ``faiss`` (``pip install 'pinclip-toolkit[faiss]'``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ann-index", help="build a faiss ANN index over pinclip embed output",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("emb_dir", type=Path, metavar="EMB_DIR", help="embedding directory written by pinclip embed")
    p.add_argument("--out", required=True, type=Path, metavar="INDEX_DIR", help="output directory (new, empty or an earlier index: replaced atomically)")
    p.add_argument("--kind", choices=("flat", "ivfpq"), default="ivfpq")
    p.add_argument("--which", choices=("fused", "image", "text"), default="fused", help="which embeddings to index")
    p.add_argument("--nlist", type=int, default=None, help="ivfpq: inverted lists (default ~4 sqrt(P))")
    p.add_argument("--m", type=int, default=None, help="ivfpq: PQ sub-quantizers, must divide D (default D/8)")
    p.add_argument("--nbits", type=int, default=None, help="ivfpq: bits per PQ code (default 8)")
    p.add_argument("--nprobe", type=int, default=None, help="ivfpq: lists scanned per query, stored as the default")
    p.add_argument("--train-size", type=int, default=None, help="ivfpq: vectors sampled to train (default 40 nlist)")
    p.add_argument("--seed", type=int, default=0, help="training sample and k-means seed")
    p.add_argument("--recall-queries", type=int, default=0, metavar="Q",
                   help="also measure recall@10 against exact search on Q sampled pins (0: skip)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graph.locks import exclusive_lock
    from graph.output_dir import check_output_dir

    from training.ann import ANN_OUTPUT, FaissMissingError, require_faiss
    from training.cli import CLIError

    try:
        require_faiss()
    except FaissMissingError as exc:
        raise CLIError(str(exc)) from None

    params = {k: getattr(args, k) for k in ("nlist", "m", "nbits", "nprobe", "train_size") if getattr(args, k) is not None}
    if args.kind == "flat" and params:
        raise CLIError(f"--kind flat takes no {', '.join('--' + k.replace('_', '-') for k in params)} (ivfpq only)")
    if args.recall_queries < 0:
        raise CLIError(f"--recall-queries {args.recall_queries}: must be >= 0")
    check_output_dir(args.out, ANN_OUTPUT)  # refuse before the (long) k-means, not after it
    with exclusive_lock(args.out, ANN_OUTPUT.what):
        return _build(args, params)


def _build(args: argparse.Namespace, params: dict) -> int:
    import numpy as np

    from training.ann import ANNIndexError, FaissMissingError, build_index_from_embeddings, save_index
    from training.cli import CLIError

    t0 = time.perf_counter()
    try:
        ann = build_index_from_embeddings(args.emb_dir, args.out, kind=args.kind, which=args.which, seed=args.seed,
                                          **params)
        if args.recall_queries:
            from training.embed import load_embeddings
            x = load_embeddings(args.emb_dir)[args.which]
            rng = np.random.default_rng(args.seed)
            rows = np.sort(rng.choice(x.shape[0], size=min(args.recall_queries, x.shape[0]), replace=False))
            k = min(10, x.shape[0])
            recall = ann.recall(np.asarray(x[rows], dtype=np.float32), x, k=k)
            save_index(ann, args.out, {f"recall@{k}": recall, "recall_queries": int(rows.size)})
    except FaissMissingError as exc:
        raise CLIError(str(exc)) from None
    except ANNIndexError as exc:
        raise CLIError(str(exc)) from None
    m = json.loads((args.out / "manifest.json").read_text())
    p = m["params"]
    shown = ", ".join(f"{k}={p[k]}" for k in ("nlist", "m", "nbits", "nprobe") if k in p)
    recall = next((f"; recall@{k[7:]} {v:.3f} vs exact ({m['recall_queries']} queries)"
                   for k, v in m.items() if k.startswith("recall@")), "")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s: {m['kind']} index of {m['num_vectors']:,} "
          f"{m['which']} vectors x {m['dim']}{' (' + shown + ')' if shown else ''}, "
          f"{m['index_bytes'] / 1e6:.1f} MB = {m['bytes_per_vector']:.1f} B/vector{recall}")
    return 0
