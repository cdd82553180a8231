"""Pictures of pins: image grids with captions and neighbor galleries."""
from __future__ import annotations

import textwrap
from typing import Any, Mapping

import numpy as np
import torch

from graph.features import ImagePathError
from pinclip.transforms import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image
from training.data import DataError
from training.notebook_utils.display import pyplot


# ------------------------------------------------------------------------------------ pictures
def load_pin_images(features: Any, pins: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                    on_bad_image: str = "error") -> list[np.ndarray | None]:
    """RGB uint8 arrays [H, W, 3] of ``pins`` (int [N]) from the graph's ``FeatureStore``;
    None for -1 padding and for pins without an image.

    Images are opened as the training loader opens them (``pinclip.transforms.open_image``:
    regular files inside the dataset directory, at most ``max_pixels`` pixels). A bad image
    raises ``training.data.DataError`` naming the pin and the path (``on_bad_image="error"``)
    or is drawn as a missing image (``"skip"``).
    """
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image={on_bad_image!r}: expected 'error' or 'skip'")
    ids = np.asarray(torch.as_tensor(pins).cpu().numpy() if isinstance(pins, torch.Tensor) else pins,
                     dtype=np.int64).reshape(-1)
    out: list[np.ndarray | None] = [None] * ids.size
    for i in np.flatnonzero(ids >= 0):
        pin = int(ids[i])
        try:
            path = features.pin_image_paths([pin])[0]
            if path is not None:
                out[i] = np.asarray(open_image(path, max_pixels).convert("RGB"))
        except (ImagePathError, ImageReadError) as exc:
            if on_bad_image == "error":
                detail = str(exc) if isinstance(exc, ImagePathError) else f"bad image {exc}"
                raise DataError(detail if detail.startswith("pin ") else f"pin {pin}: {detail}") from None
    return out


def _caption(text: str | None, width: int) -> str:
    if text is None:
        return "(no caption)"
    return "\n".join(textwrap.wrap(text, width)[:3]) or "(empty)"


def _show(ax, img: np.ndarray | None, border: str | None = None) -> None:
    if img is None:
        ax.imshow(np.full((8, 8, 3), 235, np.uint8))
        ax.text(0.5, 0.5, "-", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(3)


def plot_pin_grid(features: Any, pins: Any, ncols: int = 6, captions: bool = True, title: str | None = None,
                  caption_width: int = 18, cell: float = 1.8):
    """Figure: the images of ``pins`` (int [N]) in a grid of ``ncols`` columns, each with its
    pin id and caption (wrapped to ``caption_width`` characters, at most 3 lines)."""
    plt = pyplot()
    ids = np.asarray(torch.as_tensor(pins).cpu().numpy() if isinstance(pins, torch.Tensor) else pins,
                     dtype=np.int64).reshape(-1)
    n = max(1, ids.size)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + (0.7 if captions else 0.2)) * nrows),
                             squeeze=False)
    images = load_pin_images(features, ids)
    texts = features.pin_text(ids[ids >= 0]) if captions and (ids >= 0).any() else []
    text_of = dict(zip(ids[ids >= 0].tolist(), texts))
    for j, ax in enumerate(axes.flat):
        if j >= ids.size:
            ax.axis("off")
            continue
        _show(ax, images[j])
        label = f"pin {ids[j]}"
        if captions and ids[j] >= 0:
            label += "\n" + _caption(text_of.get(int(ids[j])), caption_width)
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_neighbor_gallery(features: Any, query_pins: Any, neighbors: Mapping[str, Any] | Any,
                          num_show: int = 8, marks: Mapping[str, Any] | Any = None, cell: float = 1.1,
                          title: str | None = None):
    """Figure: one row per (query pin, method): the query's image, then its first ``num_show``
    neighbors' images, left to right in rank order.

    query_pins: int [Q]. neighbors: int [Q, T] pin ids (-1 padded), or {method name: int [Q, T]}
    to compare methods (samplers, embeddings) on the same queries. marks: bool [Q, T] (or a dict
    like ``neighbors``): True draws a green border (e.g. "is a true board-mate"), False red.
    """
    plt = pyplot()
    q = np.asarray(torch.as_tensor(query_pins).cpu().numpy() if isinstance(query_pins, torch.Tensor)
                   else query_pins, dtype=np.int64).reshape(-1)
    nb = dict(neighbors) if isinstance(neighbors, Mapping) else {"": neighbors}
    mk = (dict(marks) if isinstance(marks, Mapping) else {name: marks for name in nb}) if marks is not None else {}
    rows = [(i, name) for i in range(q.size) for name in nb]
    fig, axes = plt.subplots(len(rows), num_show + 1, figsize=(cell * (num_show + 1) + 1.2, cell * len(rows) + 0.4),
                             squeeze=False)
    query_images = load_pin_images(features, q)
    for r, (i, name) in enumerate(rows):
        row_nb = np.asarray(torch.as_tensor(nb[name]).cpu()[i, :num_show].numpy(), dtype=np.int64)
        row_nb = np.concatenate([row_nb, np.full(num_show - row_nb.size, -1, np.int64)])
        images = load_pin_images(features, row_nb)
        m = mk.get(name)
        row_mark = None if m is None else np.asarray(torch.as_tensor(m).cpu()[i, :num_show].numpy(), dtype=bool)
        _show(axes[r, 0], query_images[i], border="black")
        axes[r, 0].set_ylabel(f"{name}\npin {q[i]}" if name else f"pin {q[i]}", fontsize=7, rotation=0,
                              ha="right", va="center")
        for j in range(num_show):
            border = None
            if row_mark is not None and j < row_mark.size and row_nb[j] >= 0:
                border = "tab:green" if row_mark[j] else "tab:red"
            _show(axes[r, j + 1], images[j], border)
    axes[0, 0].set_title("query", fontsize=8)
    for j in range(num_show):
        axes[0, j + 1].set_title(f"#{j + 1}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_search_results(result: Mapping[str, Any], title: str | None = None, query_image: Any = None,
                        caption_width: int = 18, cell: float = 1.8, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """Figure: one row, the query image first when ``query_image`` (a path) is given, then every
    result of ``training.search.search`` (``{"results": [{"pin_id", "score", "image"?, "text"?}]}``)
    with its pin id, score and caption. Images are opened with ``pinclip.transforms.open_image``;
    a result without a known image is drawn as missing."""
    plt = pyplot()
    results = list(result["results"])
    cells = ([("query", None, query_image, None)] if query_image is not None else []) + [
        (r["pin_id"], r["score"], r.get("image"), r.get("text")) for r in results]
    fig, axes = plt.subplots(1, max(1, len(cells)), figsize=(cell * max(1, len(cells)), cell + 0.9), squeeze=False)
    for ax, (pin_id, score, path, text) in zip(axes.flat, cells):
        img = None
        if path is not None:
            try:
                img = np.asarray(open_image(path, max_pixels).convert("RGB"))
            except ImageReadError:
                img = None
        _show(ax, img, border="tab:blue" if score is None else None)
        label = "query" if score is None else f"{pin_id}  {score:.3f}"
        if text is not None:
            label += "\n" + _caption(text, caption_width)
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
