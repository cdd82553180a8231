"""The training data pipeline: no leakage, batch layout, determinism across workers and resume,
missing features, the text feature cache."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sampling.loader import batch_generator
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
