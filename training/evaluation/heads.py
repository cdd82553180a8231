"""Which embedding head of a method is trained, and which one its headline metrics come from.

A training run embeds every pin three ways (``image``, ``text``, ``fused``: ``training.embed``);
a baseline has the head(s) it was built with (``text`` for the frozen text encoder, ``graph``
for the graph-only GNN). A head that no loss term trains is never a headline: the CLIP-only
baseline (every neighbor weight 0) never trains the fusion module, so its ``fused`` head is at
initialization.

Gradients per head, from ``pinclip.losses.PinCLIPLoss`` and ``pinclip.neighbor_loss`` (the
weights are the run's resolved model ``loss`` config, ``RUN_DIR/model_config.json``):

* ``image`` and ``text``: the image-text term (``image_text`` "clip" / "siglip" with
  ``image_text_weight`` > 0) pulls each pin's image to its text;
* ``fused``: ``neighbor_fused_loss`` (seed fused vs neighbor fused) and ``neighbor_image_loss``
  (seed fused vs neighbor *image*: also trains ``image``), each with weight > 0;
* ``neighbor_cross_modal_loss`` (``cross_modal`` and its weight > 0): seed image vs neighbor text
  and seed text vs neighbor image: trains ``image`` and ``text``;
* ``neighbor_image_image_loss`` (weight > 0): seed image vs neighbor image: trains ``image``.

Selection (:func:`select_headline_head`): among the trained heads, the one with the best
board-mate recall@10 on the graph store's VALIDATION edges (never on test); ties go to the
order of ``PIN_EMBEDDING_ORDER`` (fused, graph, image, text). A single trained head is taken as
is. A store without validation edges falls back to the designated head: the first trained head
in that order (the pin embedding the toolkit serves by default, ``fused`` when it is trained).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from training.evaluation.summary import PIN_EMBEDDING_ORDER

__all__ = ["trained_heads", "designated_head", "select_headline_head"]


def _w(loss: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    v = loss.get(key, default)
    return float(v) if v is not None else 0.0


def trained_heads(loss: Mapping[str, Any]) -> list[str]:
    """The heads (among "image", "text", "fused") that some loss term with weight > 0 trains,
    from a resolved model ``loss`` config dict (``pinclip.config.LossConfig`` fields)."""
    heads = set()
    image_text = loss.get("image_text")
    if image_text not in (None, "none") and _w(loss, "image_text_weight", 1.0) > 0:
        heads |= {"image", "text"}
    if _w(loss, "neighbor_fused_weight") > 0:
        heads.add("fused")
    if _w(loss, "neighbor_image_weight") > 0:
        heads |= {"fused", "image"}
    if loss.get("cross_modal", True) and _w(loss, "neighbor_cross_modal_weight") > 0:
        heads |= {"image", "text"}
    if _w(loss, "neighbor_image_image_weight") > 0:
        heads.add("image")
    return [h for h in PIN_EMBEDDING_ORDER if h in heads]


def designated_head(available: Sequence[str], trained: Sequence[str] | None = None) -> str:
    """The default pin embedding: the first head in ``PIN_EMBEDDING_ORDER`` that is available
    and trained (any available one when none is trained)."""
    pool = [h for h in available if trained is None or h in trained] or list(available)
    return next(h for h in PIN_EMBEDDING_ORDER if h in pool)


def select_headline_head(available: Sequence[str], trained: Sequence[str] | None,
                         val_recall: Mapping[str, float | None] | None) -> tuple[str, str]:
    """(head, how it was chosen). available: the method's heads; trained: those a loss trains
    (None: all); val_recall: {head: board_recall@10 on the validation split} (None or empty when
    the store has no validation edges). Never returns an untrained head while a trained one
    exists."""
    available = [h for h in PIN_EMBEDDING_ORDER if h in available]
    if not available:
        raise ValueError("no embedding head to choose from")
    pool = [h for h in available if trained is None or h in trained]
    if not pool:
        return designated_head(available), "no head is trained by a loss: the designated head"
    if len(pool) == 1:
        return pool[0], "the only trained head"
    scored = {h: v for h, v in (val_recall or {}).items() if h in pool and v is not None}
    if not scored:
        return designated_head(pool), "no validation edges: the designated head (first trained of fused, graph, image, text)"
    best = max(scored.values())
    head = next(h for h in pool if scored.get(h) == best)
    return head, "best board_recall@10 on the validation split among trained heads"
