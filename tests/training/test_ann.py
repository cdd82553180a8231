"""training.ann and `pinclip ann-index`: faiss flat / IVF-PQ over exported embeddings."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")

from training.ann import (ANNIndexError, FaissMissingError, build_index, build_index_from_embeddings,  # noqa: E402
                          default_ivfpq_params, exact_reference, load_index, recall_at_k, require_faiss, rerank,
                          save_index)
from training.cli import main as cli_main  # noqa: E402

N, D = 3000, 16


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def clustered(n: int, d: int, seed: int, clusters: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered(N, D, 0)
    # Queries near indexed vectors (not equal to them): shifted copies of 100 rows.
    q = x[np.random.default_rng(1).choice(N, 100, replace=False)] + 0.05
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    _, exact = exact_reference(q, x, 10)
    return x, q, exact


def write_embedding_dir(path, vectors: np.ndarray, dtype="float32"):
    """A minimal `pinclip embed` directory (format of training/embed.py) around ``vectors``."""
    import pyarrow as pa

    from training.embed import FORMAT, VERSION

    path.mkdir(parents=True)
    p, d = vectors.shape
    for k in ("image", "text", "fused"):
        np.save(path / f"{k}.npy", vectors.astype(dtype))
    np.save(path / "pin_ids.npy", np.arange(p, dtype=np.int64))
    np.save(path / "image_missing.npy", np.zeros(p, dtype=bool))
    np.save(path / "cold_start.npy", np.zeros(p, dtype=bool))
    with pa.OSFile(str(path / "pin_external_ids.arrow"), "wb") as sink:
        table = pa.table({"pin_id": pa.array(np.arange(p))})
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    manifest = {"format": FORMAT, "version": VERSION, "num_pins": p, "dim": d, "dtype": dtype,
                "arrays": {"image": "image.npy", "text": "text.npy", "fused": "fused.npy", "pin_ids": "pin_ids.npy",
                           "image_missing": "image_missing.npy", "cold_start": "cold_start.npy",
                           "pin_external_ids": "pin_external_ids.arrow"},
                "normalized": True, "model": "test", "step": 7}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_default_params_scale_with_n():
    p = default_ivfpq_params(1_000_000, 256)
    assert (p["nlist"], p["m"], p["nbits"], p["nprobe"]) == (4096, 32, 8, 64)
    assert p["train_size"] == 40 * 4096
    small = default_ivfpq_params(500, 24)
    assert small["nlist"] == 500 // 39 and 24 % small["m"] == 0 and small["nbits"] < 8
    assert 500 >= 39 * 2 ** small["nbits"] or small["nbits"] == 4
    with pytest.raises(ANNIndexError, match="cannot index 0 vectors"):
        default_ivfpq_params(0, 8)


def test_flat_is_exact(data):
    x, q, exact = data
    ann = build_index(x, "flat")
    scores, ids = ann.search(q, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (100, 10)
    assert recall_at_k(ids, exact) == 1.0
    assert ann.recall(q, x, k=10) == 1.0
    np.testing.assert_allclose(scores[:, 0], np.einsum("qd,qd->q", q, x[ids[:, 0]]), rtol=1e-5)


def test_ivfpq_recall_rises_with_nprobe_and_nears_one(data):
    x, q, exact = data
    coarse = build_index(x, "ivfpq", nlist=32, m=4, nbits=6, seed=0)
    recalls = [coarse.recall(q, x, 10, nprobe=p, exact=(None, exact)) for p in (1, 4, 32)]
    assert recalls[0] <= recalls[1] + 1e-9 <= recalls[2] + 2e-9 and recalls[0] < 0.9
    # One dimension per sub-quantizer (256 levels) and every list scanned: near-exact.
    fine = build_index(x, "ivfpq", nlist=16, m=D, nbits=8, seed=0)
    assert fine.recall(q, x, 10, nprobe=16, exact=(None, exact)) >= 0.95
    # Exact re-ranking of 50 candidates recovers much of what the coarse codes lose.
    _, cand = coarse.search(q, 50, nprobe=32)
    scores, rr = rerank(q, cand, x, 10)
    assert recall_at_k(rr, exact) > recalls[2] + 0.3 and recall_at_k(rr, exact) >= 0.85
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", x[rr], q), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_build_is_deterministic_and_seeded(data):
    x, q, _ = data
    a = build_index(x, "ivfpq", nlist=16, m=4, seed=3)
    b = build_index(x, "ivfpq", nlist=16, m=4, seed=3)
    faiss = require_faiss()
    assert bytes(faiss.serialize_index(a.index)) == bytes(faiss.serialize_index(b.index))
    c = build_index(x, "ivfpq", nlist=16, m=4, seed=4)
    assert bytes(faiss.serialize_index(a.index)) != bytes(faiss.serialize_index(c.index))


def test_save_load_roundtrip_and_atomic_replace(data, tmp_path, monkeypatch):
    x, q, _ = data
    ann = build_index(x, "ivfpq", nlist=16, m=4, nprobe=3, seed=0)
    out = save_index(ann, tmp_path / "idx", {"which": "fused"})
    back = load_index(out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "ivfpq" and m["params"]["nprobe"] == 3 and m["num_vectors"] == N and m["dim"] == D
    assert m["index_bytes"] == (out / "index.faiss").stat().st_size and m["which"] == "fused"
    assert back.index.nprobe == 3
    for nprobe in (None, 16):
        np.testing.assert_array_equal(back.search(q, 5, nprobe)[1], ann.search(q, 5, nprobe)[1])
    # A save that fails midway leaves the previous index whole.
    before = (out / "index.faiss").read_bytes()
    faiss = require_faiss()

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_index(build_index(x, "flat"), out)
    assert (out / "index.faiss").read_bytes() == before and load_index(out).kind == "ivfpq"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_bad_inputs_name_the_value(data, tmp_path):
    x, q, _ = data
    with pytest.raises(ANNIndexError, match="kind='hnsw'"):
        build_index(x, "hnsw")
    with pytest.raises(ANNIndexError, match="m=5: must divide the dimension 16"):
        build_index(x, "ivfpq", m=5)
    with pytest.raises(ANNIndexError, match="nlist=5000: more lists than the 3000 vectors"):
        build_index(x, "ivfpq", nlist=5000)
    with pytest.raises(ANNIndexError, match="nprobe=2: only an ivfpq index"):
        build_index(x, "flat", nprobe=2)
    bad = x.copy()
    bad[123, 4] = np.nan
    with pytest.raises(ANNIndexError, match="row 123 holds a non-finite value"):
        build_index(bad, "flat")
    with pytest.raises(ANNIndexError, match="expected a 2-D"):
        build_index(x[0], "flat")
    with pytest.raises(ANNIndexError, match="floating-point"):
        build_index(x.astype(np.int32), "flat")
    ann = build_index(x, "flat")
    with pytest.raises(ANNIndexError, match="queries: dim 8 != index dim 16"):
        ann.search(q[:, :8], 5)
    with pytest.raises(ANNIndexError, match="nprobe=4: only an ivfpq"):
        ann.search(q, 5, nprobe=4)
    with pytest.raises(ANNIndexError, match="k=0"):
        ann.search(q, 0)
    # Index directories: missing, wrong format, corrupt index file, manifest disagreeing.
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_index(tmp_path / "nothing")
    out = save_index(ann, tmp_path / "idx")
    data_bytes = (out / "index.faiss").read_bytes()
    (out / "index.faiss").write_bytes(data_bytes[:100])
    with pytest.raises(ANNIndexError, match="index.faiss: faiss cannot read it"):
        load_index(out)
    (out / "index.faiss").write_bytes(data_bytes)
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(m, num_vectors=7)))
    with pytest.raises(ANNIndexError, match="manifest.json says 7 of dim 16"):
        load_index(out)
    (out / "manifest.json").write_text(json.dumps(dict(m, format="other")))
    with pytest.raises(ANNIndexError, match="format 'other'"):
        load_index(out)


def test_from_embedding_dir_float16_and_cli(data, tmp_path, capsys):
    x, q, _ = data
    emb = write_embedding_dir(tmp_path / "emb", x, dtype="float16")
    ann = build_index_from_embeddings(emb, tmp_path / "a", kind="ivfpq", which="image", nlist=16, m=D, nbits=6,
                                      seed=0)
    m = load_index(tmp_path / "a").manifest
    assert m["which"] == "image" and m["source"]["step"] == 7 and m["source"]["dtype"] == "float16"
    assert ann.recall(q, x.astype(np.float16).astype(np.float32), 10, nprobe=16) >= 0.85

    rc = cli_main(["ann-index", str(emb), "--out", str(tmp_path / "cli"), "--nlist", "16", "--m", "16",
                   "--nbits", "6", "--nprobe", "16", "--recall-queries", "50"])
    out = capsys.readouterr().out
    assert rc == 0 and "ivfpq index of 3,000 fused vectors x 16" in out and "recall@10" in out
    m = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert m["params"]["nprobe"] == 16 and m["recall_queries"] == 50 and m["recall@10"] >= 0.85
    rc = cli_main(["ann-index", str(emb), "--out", str(tmp_path / "flat"), "--kind", "flat", "--recall-queries", "20"])
    assert rc == 0 and json.loads((tmp_path / "flat" / "manifest.json").read_text())["recall@10"] == 1.0
    capsys.readouterr()

    rc = cli_main(["ann-index", str(emb), "--out", str(tmp_path / "x"), "--kind", "flat", "--nlist", "4"])
    assert rc == 2 and "--kind flat takes no --nlist" in capsys.readouterr().err
    rc = cli_main(["ann-index", str(emb), "--out", str(tmp_path / "x"), "--m", "5"])
    assert rc == 2 and "m=5: must divide the dimension 16" in capsys.readouterr().err
    rc = cli_main(["ann-index", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "not an embedding directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_faiss_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)      # import faiss -> ImportError
    with pytest.raises(FaissMissingError, match=r"pip install 'pinclip-toolkit\[faiss\]'"):
        require_faiss()
    rc = cli_main(["ann-index", str(tmp_path), "--out", str(tmp_path / "x")])
    assert rc == 2 and "faiss is not installed" in capsys.readouterr().err
