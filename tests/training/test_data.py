"""The training data pipeline: no leakage, batch layout, determinism across workers and resume,
missing features, the text feature cache."""
from __future__ import annotations

import contextlib
import shutil
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sampling.loader import SeedBatches, batch_generator
from training.config import load_train_config
from training.data import PinFeatureFetcher, TrainLoader
from training.trainer import Trainer


@pytest.fixture
def trainer(make_config, tmp_path):
    return Trainer(load_train_config(make_config()), tmp_path / "run")


def test_no_cold_start_pin_or_heldout_edge_reaches_training(trainer):
    g = trainer.graph
    cold = set(g.splits.cold_start_pins.tolist())
    assert cold and len(trainer.seeds) == g.num_pins - len(cold)
    # The sampler walks exactly the training edges.
    pins, boards = g.edges()
    train = torch.from_numpy(np.asarray(g.splits.edge_split) == 0)
    expected = set(zip(pins[train].tolist(), boards[train].tolist()))
    sg = trainer.dataset.sampler.graph
    owner = torch.repeat_interleave(torch.arange(sg.num_pins), sg.pins.indptr[1:] - sg.pins.indptr[:-1])
    assert set(zip(owner.tolist(), sg.pins.indices.long().tolist())) == expected
    # A whole epoch: no cold-start pin anywhere in a batch (seeds, positives, negatives).
    seen = set()
    for index in range(len(trainer.dataset)):
        batch = trainer.dataset[(0, index)]
        seen |= set(batch.pins.tolist())
    assert seen and not (seen & cold)


def test_batch_layout_matches_the_sampler(trainer):
    ds = trainer.dataset
    batch = ds[(0, 2)]
    seeds = ds.batches.batch(0, 2)
    assert torch.equal(batch.pins[batch.seed_rows], seeds)
    gen = batch_generator(ds.seed, 0, ds.batches.global_index(2))
    pairs = ds.sampler.sample(seeds, generator=gen, num_hard_negatives=0)
    pos = pairs.positives
    got = batch.pins[batch.positive_rows]
    assert torch.equal(torch.where(pos >= 0, got, -1), pos)
    assert torch.equal(batch.positive_weights, pairs.positive_weights)
    assert torch.equal(batch.false_negative_mask, pairs.false_negative_mask)
    neg_ids, neg_mask = pairs.extra_negatives()
    assert torch.equal(batch.pins[batch.negative_rows], neg_ids)
    assert torch.equal(batch.negative_mask, neg_mask)
    u = batch.num_rows
    assert batch.images.shape == (u, 3, 32, 32) and batch.text["text_features"].shape[:2] == (u, 12)
    assert batch.text["text_features"].dtype == torch.float16 and batch.pins.unique().numel() == u


def _items(loader, n):
    out = []
    for item in loader:
        out.append(item)
        if len(out) == n:
            break
    return out


def _same(a, b):
    assert (a.epoch, a.index) == (b.epoch, b.index)
    assert torch.equal(a.pins, b.pins) and torch.equal(a.images, b.images)
    assert torch.equal(a.positive_rows, b.positive_rows) and torch.equal(a.negative_mask, b.negative_mask)


def test_batches_do_not_depend_on_workers_and_resume_exactly(trainer):
    n = len(trainer.dataset) + 2          # across an epoch boundary
    plain = _items(TrainLoader(trainer.dataset, num_workers=0), n)
    workers = _items(TrainLoader(trainer.dataset, num_workers=2, prefetch_factor=2), n)
    for a, b in zip(plain, workers):
        _same(a, b)
    assert plain[-1].epoch == 1
    loader = TrainLoader(trainer.dataset, num_workers=2)
    _items(loader, 4)
    state = loader.state_dict()
    assert (state["epoch"], state["next_index"]) == (0, 4)
    again = TrainLoader(trainer.dataset, num_workers=0)
    again.load_state_dict(state)
    _same(_items(again, 1)[0], plain[4])
    bad = dict(state, batch_size=state["batch_size"] + 1)
    with pytest.raises(ValueError, match="batch_size"):
        again.load_state_dict(bad)


def test_missing_image_and_text(tiny_world, tmp_path, trainer):
    from graph.dataset import load_dataset_graph

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    table = pq.read_table(world / "pins.parquet")
    image = table.column("image").to_pylist()
    text = table.column("text").to_pylist()
    image[3], text[5] = None, None
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(image, pa.string()))
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(text, pa.string()))
    pq.write_table(table, world / "pins.parquet")
    g = load_dataset_graph(world)
    from pinclip.factory import get_image_transform, get_tokenizer
    fetcher = PinFeatureFetcher(g.features, get_image_transform(trainer.model), 32,
                                tokenizer=get_tokenizer(trainer.model))
    pins = torch.tensor([3, 4, 5])
    images, missing = fetcher.images(pins)
    assert missing.tolist() == [True, False, False]
    assert torch.count_nonzero(images[0]) == 0 and torch.count_nonzero(images[1]) > 0
    tok = fetcher.text(pins)
    assert int(tok["attention_mask"][2].sum()) == 2       # [CLS] [SEP]: the empty caption


def test_text_cache_matches_the_tower_and_is_reused(trainer, tmp_path):
    from pinclip.factory import get_tokenizer
    from training.text_cache import get_text_cache

    cache = trainer.fetcher.text_cache
    pins = torch.tensor([0, 7, 42])
    tokens, mask = cache.fetch(pins)
    tok = get_tokenizer(trainer.model)(trainer.graph.features.pin_text(pins))
    ref = trainer.model.text_features(tok["input_ids"], tok["attention_mask"])
    assert torch.equal(mask, ref["mask"])
    torch.testing.assert_close(tokens.float(), ref["tokens"].float())
    messages = []
    again = get_text_cache(trainer.model, get_tokenizer(trainer.model), trainer.graph.features,
                           trainer.graph.num_pins, trainer.cfg.data.cache_dir, log=messages.append)
    assert again.directory == cache.directory and not messages      # opened, not rebuilt
    with torch.no_grad():
        next(trainer.model.text.parameters()).add_(1.0)               # another tower: another key
    other = get_text_cache(trainer.model, get_tokenizer(trainer.model), trainer.graph.features,
                           trainer.graph.num_pins, tmp_path / "cache2", log=messages.append)
    assert other.key != cache.key and messages


# ---------------------------------------------------------------------------- bad images
def _png_declaring(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header declares width x height (8-bit RGB) and holds no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@contextlib.contextmanager
def _no_hang(seconds: int = 10):
    """Fail (TimeoutError) instead of hanging when the block takes over ``seconds``: a FIFO
    opened for reading would block forever (pytest-timeout is not installed)."""
    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s: the read hung")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def bad_image_graph(tmp_path):
    """A 5-pin graph: pin 0 a good 8x8 PNG, 1 a PNG declaring 20000 x 20000 pixels (48 bytes), 2 a
    FIFO, 3 no image, 4 a good PNG."""
    import os

    from PIL import Image

    from graph.dataset import load_dataset_graph

    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(d / "img" / "0.png")
    Image.new("RGB", (8, 8), (30, 200, 30)).save(d / "img" / "4.png")
    (d / "img" / "1.png").write_bytes(_png_declaring(20000, 20000))
    os.mkfifo(d / "img" / "2.png")
    pq.write_table(pa.table({"pin_id": [0, 1, 2, 3, 4], "text": ["a", "b", "c", "d", "e"],
                             "image": ["img/0.png", "img/1.png", "img/2.png", None, "img/4.png"]}), d / "pins.parquet")
    pq.write_table(pa.table({"board_id": [0], "name": ["x"]}), d / "boards.parquet")
    pq.write_table(pa.table({"pin_id": [0, 1, 2, 3, 4], "board_id": [0] * 5}), d / "edges.parquet")
    return load_dataset_graph(d)


def _fetcher(g, **kw):
    from pinclip.transforms import ImageTransform
    return PinFeatureFetcher(g.features, ImageTransform(8, (0.5,) * 3, (0.25,) * 3), 8,
                             tokenizer=lambda texts: {}, **kw)


def test_a_fifo_image_is_a_data_error_not_a_hang(bad_image_graph):
    from training.data import DataError
    with _no_hang(), pytest.raises(DataError, match=r"pin 2 \(row 2 of the pins table\): bad image .*2\.png: "
                                                    r"a FIFO \(named pipe\), not an image file") as exc:
        _fetcher(bad_image_graph).images(torch.tensor([0, 2]))
    assert "data.on_bad_image=skip" in str(exc.value) and "--check-images" in str(exc.value)


def test_an_oversized_image_is_a_data_error_naming_the_pin(bad_image_graph):
    import time

    from graph.errors import ToolkitError
    from training.data import DataError
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"pin 1 \(row 1 of the pins table\): bad image .*1\.png: declares "
                                        r"400,000,000 pixels") as exc:
        _fetcher(bad_image_graph).images(torch.tensor([1]))
    assert isinstance(exc.value, ToolkitError) and time.perf_counter() - t0 < 1.0   # never decoded
    # the configured cap, checked from the header: an 8x8 image over a 50-pixel cap
    with pytest.raises(DataError, match=r"pin 0 .*8 x 8 = 64 pixels, over the cap of 50 .*data.max_image_pixels=50"):
        _fetcher(bad_image_graph, max_image_pixels=50).images(torch.tensor([0]))
    images, missing = _fetcher(bad_image_graph, max_image_pixels=64).images(torch.tensor([0, 3]))
    assert missing.tolist() == [False, True] and torch.count_nonzero(images[0]) > 0


def test_skipped_bad_images_are_pins_without_an_image_counted_and_logged_once(bad_image_graph, caplog):
    import logging

    fetcher = _fetcher(bad_image_graph, on_bad_image="skip")
    good, _ = _fetcher(bad_image_graph).images(torch.tensor([0, 4]))
    pins = torch.tensor([0, 1, 2, 3, 4])
    with caplog.at_level(logging.WARNING, logger="training.data"), _no_hang():
        for _ in range(3):
            skipped = []
            images, missing = fetcher.images(pins, skipped=skipped)
            assert missing.tolist() == [False, True, True, True, False]
            assert [p for p, _ in skipped] == [1, 2]
            assert torch.count_nonzero(images[1:4]) == 0
            assert torch.equal(images[0], good[0]) and torch.equal(images[4], good[1])
    assert fetcher.num_skipped_images == 2 and sorted(fetcher.skipped_images) == [1, 2]
    logged = [r.getMessage() for r in caplog.records if r.name == "training.data"]
    assert len(logged) == 2, logged                 # each skipped pin logged once, not once a batch
    assert "pin 1 (row 1" in logged[0] and "400,000,000 pixels" in logged[0] and "pin 2 (row 2" in logged[1]
    with pytest.raises(ValueError, match="on_bad_image='sometimes'"):
        _fetcher(bad_image_graph, on_bad_image="sometimes")


def test_the_loader_counts_skipped_images_across_batches(bad_image_graph, caplog):
    import logging

    from training.data import TrainBatchDataset
    batches = SeedBatches(torch.tensor([0, 1, 2, 3, 4]), 2, shuffle=False)
    ds = TrainBatchDataset(None, batches, _fetcher(bad_image_graph, on_bad_image="skip"))
    loader = TrainLoader(ds, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="training.data"), _no_hang():
        items = _items(loader, 6)                    # two epochs
    assert [sorted(p for p, _ in b.skipped_images) for b in items[:3]] == [[1], [2], []]
    assert loader.num_skipped_images == 2 and sorted(loader.skipped_images) == [1, 2]
    assert len([r for r in caplog.records if r.name == "training.data"]) == 2


def test_an_image_path_that_escapes_at_read_time_is_refused(bad_image_graph, tmp_path):
    from training.data import DataError
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"secret")
    link = bad_image_graph.features.root / "img" / "4.png"
    link.unlink()
    link.symlink_to(outside)                          # swapped after the build checked it
    with pytest.raises(DataError, match=rf"pin 4 \(row 4 of the pins table\).*resolves to {outside}, outside"):
        _fetcher(bad_image_graph).images(torch.tensor([0, 4]))
    images, missing = _fetcher(bad_image_graph, on_bad_image="skip").images(torch.tensor([0, 4]))
    assert missing.tolist() == [False, True] and torch.count_nonzero(images[1]) == 0


def test_encode_pins_reports_the_pins_encoded_without_an_image(bad_image_graph):
    """What the trainer's quick check gets: pins with no image and pins whose image was skipped
    as unreadable are flagged, so text -> image retrieval leaves them out."""
    import types

    from training.embed import encode_pins

    class Echo(torch.nn.Module):                      # embeds the first 4 pixel values
        embed_dim = 4
        text = types.SimpleNamespace(frozen=False)

        def forward(self, images, **text):
            z = images.flatten(1)[:, :4].float()
            return {"image_emb": z, "text_emb": z, "fused_emb": z}

    with _no_hang():
        out = encode_pins(Echo(), _fetcher(bad_image_graph, on_bad_image="skip"), torch.arange(5), batch_size=2)
    assert out["image_missing"].tolist() == [False, True, True, True, False]
    assert out["image"].shape == (5, 4) and out["fused"].shape == (5, 4)
