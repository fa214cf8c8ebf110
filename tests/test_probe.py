"""Linear probe: stratified CV on separable and on random embeddings, baseline, id matching, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mamba_genome.cli import main
from mamba_genome.errors import UserError
from mamba_genome.io import RecordInfo, write_embeddings
from mamba_genome.workflows.probe import probe, read_labels


def _data(tmp_path, separable=True, n=60, ext="h5"):
    rng = np.random.default_rng(0)
    y = np.array(["a", "b", "c"] * (n // 3))
    X = rng.standard_normal((n, 8)).astype(np.float32)
    if separable:
        X[:, 0] += 6 * (y == "b")
        X[:, 1] += 6 * (y == "c")
    ids = [f"s{i}" for i in range(n)]
    emb = write_embeddings(tmp_path / f"e.{ext}", [RecordInfo(i, i, 0, 10) for i in ids], X)
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\tlabel\n" + "".join(f"{i}\t{lab}\n" for i, lab in zip(ids, y)))
    return emb, labels


@pytest.mark.parametrize("ext", ["h5", "parquet", "npz"])
def test_separable(tmp_path, ext):
    emb, labels = _data(tmp_path, ext=ext)
    r = probe(emb, labels, folds=5, seed=0)
    assert r["n"] == 60 and r["classes"] == ["a", "b", "c"] and r["d"] == 8 and len(r["per_fold"]) == 5
    assert r["accuracy_mean"] > 0.95 and r["macro_f1_mean"] > 0.95
    assert r["majority_accuracy_mean"] == pytest.approx(1 / 3, abs=0.05)
    assert r["majority_macro_f1_mean"] < 0.25


def test_random_features_near_chance(tmp_path):
    emb, labels = _data(tmp_path, separable=False, n=90)
    r = probe(emb, labels, folds=3)
    assert r["accuracy_mean"] < 0.6


def test_subset_of_ids_and_label_file_columns(tmp_path):
    emb, _ = _data(tmp_path)
    labels = tmp_path / "sub.tsv"
    labels.write_text("label\tid\textra\n" + "".join(f"{'xy'[i % 2]}\ts{i}\t.\n" for i in range(20)))
    r = probe(emb, labels, folds=2)
    assert r["n"] == 20 and r["n_unlabelled"] == 40
    assert read_labels(labels)["s3"] == "y"


def test_errors(tmp_path):
    emb, labels = _data(tmp_path)
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tlabel\ns1\ta\nnope1\tb\nnope2\tb\n")
    with pytest.raises(UserError, match="2 of 3 ids in .* are not in"):
        probe(emb, bad)
    bad.write_text("name\tclass\ns1\ta\n")
    with pytest.raises(UserError, match="'id' and 'label'"):
        probe(emb, bad)
    bad.write_text("id\tlabel\n" + "".join(f"s{i}\tz\n" for i in range(6)))
    with pytest.raises(UserError, match="at least 2 classes"):
        probe(emb, bad)
    with pytest.raises(UserError, match="fewer than --folds 50"):
        probe(emb, labels, folds=50)
    per_base = write_embeddings(tmp_path / "pb.h5", [RecordInfo("s0", "c", 0, 2)], [np.zeros((2, 3), np.float32)])
    with pytest.raises(UserError, match="per-base"):
        probe(per_base, labels)


def test_cli(tmp_path):
    emb, labels = _data(tmp_path)
    out = tmp_path / "probe.json"
    res = CliRunner().invoke(main, ["probe", str(emb), "--labels", str(labels), "--folds", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "majority class" in res.stderr and "logistic regression" in res.stderr
    assert res.stdout.splitlines()[0] == "metric\tmean\tstd"
    assert json.loads(out.read_text())["folds"] == 3
    res = CliRunner().invoke(main, ["probe", str(emb), "--labels", str(tmp_path / "missing.tsv")])
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.output
