"""Embedding files: every format round-trips (h5py / pandas / numpy), writes are atomic, bad -o fails fast."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from mamba_genome.errors import InputFileError, UserError
from mamba_genome.io import EmbeddingWriter, RecordInfo, check_output, read_embeddings, write_embeddings

RECORDS = [RecordInfo("r1", "chr1", 0, 10), RecordInfo("chr2:5-12", "chr2", 5, 12), RecordInfo("r3", "chr1", 3, 4)]
ATTRS = {"model": "runs/x", "pool": "mean", "layer": None, "mamba_genome_version": "0.1.0"}


@pytest.fixture
def pooled():
    return np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)


@pytest.mark.parametrize("ext", ["h5", "npz", "npy", "parquet"])
def test_pooled_round_trip(tmp_path, pooled, ext):
    path = write_embeddings(tmp_path / f"e.{ext}", RECORDS, pooled, attrs=ATTRS)
    e = read_embeddings(path)
    np.testing.assert_array_equal(e.embeddings, pooled)
    assert e.embeddings.dtype == np.float32 and not e.per_base
    if ext == "npy":
        assert e.ids is None
    else:
        assert e.ids == ["r1", "chr2:5-12", "r3"] and e.contig == ["chr1", "chr2", "chr1"]
        assert e.start.tolist() == [0, 5, 3] and e.end.tolist() == [10, 12, 4] and e.length.tolist() == [10, 7, 1]
        assert e.attrs["pool"] == "mean" and e.attrs["layer"] is None and e.attrs["d_model"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"e.{ext}"]  # no temporary files left


def test_third_party_readers(tmp_path, pooled):
    df = pd.read_parquet(write_embeddings(tmp_path / "e.parquet", RECORDS, pooled, attrs=ATTRS))
    assert list(df.columns) == ["id", "contig", "start", "end", "length"] + [f"emb_{j}" for j in range(5)]
    assert df["emb_0"].dtype == np.float32
    np.testing.assert_array_equal(df.filter(like="emb_").to_numpy(), pooled)
    with h5py.File(write_embeddings(tmp_path / "e.h5", RECORDS, pooled, attrs=ATTRS), "r") as f:
        assert f["embeddings"].shape == (3, 5) and f.attrs["model"] == "runs/x"
        assert [s.decode() for s in f["ids"][()]] == ["r1", "chr2:5-12", "r3"]
    z = np.load(write_embeddings(tmp_path / "e.npz", RECORDS, pooled), allow_pickle=False)
    assert z["ids"].tolist() == ["r1", "chr2:5-12", "r3"] and z["embeddings"].shape == (3, 5)


@pytest.mark.parametrize("ext", ["h5", "npz"])
def test_per_base_round_trip_with_stride(tmp_path, ext):
    rng = np.random.default_rng(1)
    stride = 3
    per_base = [rng.standard_normal(((r.length + stride - 1) // stride, 4)).astype(np.float32) for r in RECORDS]
    e = read_embeddings(write_embeddings(tmp_path / f"p.{ext}", RECORDS, per_base, stride=stride))
    assert e.per_base and e.attrs["stride"] == stride
    for got, want in zip(e.embeddings, per_base):
        np.testing.assert_array_equal(got, want)


def test_per_base_chunks_and_mean_combine(tmp_path):
    with EmbeddingWriter(tmp_path / "p.h5", RECORDS[:1], 2, per_base=True) as w:
        w.write(0, 0, np.ones((4, 2), np.float32))
        w.write(0, 4, np.full((6, 2), 2, np.float32))
        w.write(0, 0, np.full((10, 2), 4, np.float32), combine="mean")
    got = read_embeddings(tmp_path / "p.h5").embeddings[0]
    np.testing.assert_array_equal(got[:, 0], [2.5] * 4 + [3.0] * 6)


def test_failure_leaves_no_file_and_keeps_old_output(tmp_path, pooled):
    out = tmp_path / "e.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with EmbeddingWriter(out, RECORDS, 4, per_base=True):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_embeddings(out, RECORDS, pooled)
    with pytest.raises(RuntimeError):
        with EmbeddingWriter(out, RECORDS, 5) as w:
            w.set_pooled(pooled * 0)
            raise RuntimeError("boom")
    np.testing.assert_array_equal(read_embeddings(out).embeddings, pooled)
    assert [p.name for p in tmp_path.iterdir()] == ["e.h5"]


def test_check_output_errors(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="unknown output format '.csv'"):
        check_output(tmp_path / "e.csv")
    with pytest.raises(UserError, match="need .h5 or .npz"):
        check_output(tmp_path / "e.parquet", per_base=True)
    with pytest.raises(UserError, match="cannot create directory"):
        check_output(tmp_path / "afile" / "e.h5")
    with pytest.raises(UserError, match="is a directory"):
        (tmp_path / "d.h5").mkdir()
        check_output(tmp_path / "d.h5")
    assert check_output(tmp_path / "new" / "sub" / "e.npz").path.parent.is_dir()


def test_read_errors(tmp_path):
    with pytest.raises(InputFileError, match="no such embedding file"):
        read_embeddings(tmp_path / "x.h5")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="not a mamba-genome embedding file"):
        read_embeddings(tmp_path / "x.h5")
