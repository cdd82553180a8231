"""Distributed losses: 2 processes on gloo (CPU) equal one process on the concatenated batch.

Each rank computes its loss with features gathered with gradients (open_clip's local_loss +
gather_with_grad). Checks: the mean of the ranks' losses equals the single-process loss, each
rank's feature gradient equals world_size x the single-process gradient of its slice (DDP then
averages), and the DDP-averaged gradient of a shared parameter equals the single-process one.
"""
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from pinclip.config import LossConfig
from pinclip.losses import ClipLoss, NeighborAlignmentLoss, PinCLIPLoss, SigLipLoss

WORLD = 2
N, K, D, M = 3, 2, 6, 2  # seeds per rank, neighbor slots, dims, extra negatives per rank


def make_inputs():
    """The global batch (both ranks' data concatenated), deterministic."""
    g = torch.Generator().manual_seed(0)
    n = WORLD * N
    data = {name: torch.randn(rows, D, generator=g) for name, rows in
            [("image", n), ("text", n), ("fused", n), ("nb_fused", n * K), ("nb_image", n * K), ("nb_text", n * K),
             ("neg_fused", WORLD * M), ("neg_image", WORLD * M), ("neg_text", WORLD * M)]}
    weights = torch.randint(0, 4, (n, K), generator=g).float()
    weights[:, 0] += 1
    fn_mask = torch.rand(n, n * K, generator=g) < 0.2
    neg_mask = torch.rand(n, WORLD * M, generator=g) < 0.3
    ids = torch.tensor([0, 1, 2, 0, 3, 1])  # duplicate texts across ranks
    scale = torch.tensor(2.0)  # log multiplier, shared parameter
    return data, weights, (fn_mask, neg_mask), ids, scale


def compute(data, weights, masks, ids, log_scale, rank, world):
    """Run every loss on the rows of ``rank`` (or all rows when world == 1)."""
    rows = slice(rank * N, (rank + 1) * N) if world > 1 else slice(None)
    nb_rows = slice(rank * N * K, (rank + 1) * N * K) if world > 1 else slice(None)
    neg_rows = slice(rank * M, (rank + 1) * M) if world > 1 else slice(None)
    leaves = {k: v[nb_rows if k.startswith("nb_") else neg_rows if k.startswith("neg_") else rows]
              .clone().requires_grad_() for k, v in data.items()}
    fn_mask, neg_mask = masks
    log_scale = log_scale.clone().requires_grad_()
    emb = {k: F.normalize(v, dim=-1) for k, v in leaves.items()}
    scale = log_scale.exp()
    # this rank's false-negative rows, over the global columns
    mask = fn_mask[rows]
    losses = {
        "clip": ClipLoss()(emb["image"], emb["text"], scale)["clip_loss"],
        "clip_ids": ClipLoss()(emb["image"], emb["text"], scale, positive_ids=ids[rows])["clip_loss"],
        "clip_global": ClipLoss(local_loss=False)(emb["image"], emb["text"], scale)["clip_loss"],
        "siglip": SigLipLoss()(emb["image"], emb["text"], scale, torch.tensor(-1.0))["siglip_loss"],
        "siglip_chunked": SigLipLoss(chunk_size=4)(emb["image"], emb["text"], scale,
                                                   torch.tensor(-1.0))["siglip_loss"],
    }
    nb = NeighborAlignmentLoss(cross_modal=True)(
        emb["fused"], emb["nb_fused"], weights[rows], mask, scale, emb["image"], emb["nb_image"],
        emb["text"], emb["nb_text"])
    losses.update(nb)
    negatives = {"fused_emb": emb["neg_fused"], "image_emb": emb["neg_image"], "text_emb": emb["neg_text"]}
    with_neg = NeighborAlignmentLoss(cross_modal=True)(
        emb["fused"], emb["nb_fused"], weights[rows], mask, scale, emb["image"], emb["nb_image"],
        emb["text"], emb["nb_text"], negatives=negatives, negative_mask=neg_mask[rows])
    losses.update({"negatives_" + k: v for k, v in with_neg.items()})
    # rank-local masks ([N, N*K], [N, M]) cover only this rank's columns: the single-process
    # equivalent is the block-diagonal part of the global masks
    seed_rank = torch.arange(WORLD * N) // N
    fn_block = fn_mask & (seed_rank[:, None] == (torch.arange(WORLD * N * K) // (N * K))[None, :])
    neg_block = neg_mask & (seed_rank[:, None] == (torch.arange(WORLD * M) // M)[None, :])
    if world > 1:
        fn_local = fn_block[rows][:, rank * N * K:(rank + 1) * N * K]
        neg_local = neg_block[rows][:, rank * M:(rank + 1) * M]
    else:
        fn_local, neg_local = fn_block, neg_block
    local = NeighborAlignmentLoss(cross_modal=False)(
        emb["fused"], emb["nb_fused"], weights[rows], fn_local, scale,
        negatives={"fused_emb": emb["neg_fused"]}, negative_mask=neg_local)
    losses["local_masks"] = local["neighbor_fused_loss"]
    total = PinCLIPLoss(LossConfig(image_text="clip"), D, matryoshka_dims=[3])(
        {"image_emb": emb["image"], "text_emb": emb["text"], "fused_emb": emb["fused"],
         "logit_scale": scale, "neighbor_logit_scale": scale, "logit_bias": None},
        {"image_emb": emb["nb_image"], "text_emb": emb["nb_text"], "fused_emb": emb["nb_fused"]},
        weights[rows], mask, negative_outputs=negatives, negative_mask=neg_mask[rows])
    losses["total"] = total["loss"]
    out = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, [*leaves.values(), log_scale], allow_unused=True, retain_graph=True)
        out[name] = (loss.detach(), {k: (gr if gr is not None else torch.zeros_like(v))
                                     for (k, v), gr in zip([*leaves.items(), ("log_scale", log_scale)], grads)})
    return out


def _worker(rank, init_file, result_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        data, weights, masks, ids, scale = make_inputs()
        out = compute(data, weights, masks, ids, scale, rank, WORLD)
        torch.save(out, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_process_gloo_equals_single_process(tmp_path, monkeypatch):
    # Why: spawned children unpickle _worker by its module name (tests.pinclip...), so the repo
    # root must be importable in them whatever the working directory (sys.path is passed on).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    data, weights, masks, ids, scale = make_inputs()
    single = compute(data, weights, masks, ids, scale, 0, 1)
    for name, (loss, grads) in single.items():
        mean_loss = sum(r[name][0] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, loss, msg=f"{name}: loss")
        for key, grad in grads.items():
            if key == "log_scale":
                # a shared parameter: DDP averages the ranks' gradients
                avg = sum(r[name][1][key] for r in ranks) / WORLD
                torch.testing.assert_close(avg, grad, msg=f"{name}: d/d{key}")
                continue
            rows = N * K if key.startswith("nb_") else M if key.startswith("neg_") else N
            got = torch.cat([r[name][1][key] for r in ranks]) / WORLD
            torch.testing.assert_close(got, grad, atol=1e-6, rtol=1e-4, msg=f"{name}: d/d{key} ({rows} rows/rank)")
