"""benchmarks/make_order_task.py: the motif-order task that a bag of k-mers cannot solve.

Checks the construction the benchmark relies on: every record holds both motifs exactly
once, in the order its class names, at least ``min_gap`` apart; the manifest lists one
FASTA per class and split; and the 6-mer baseline sits at chance on it.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from mamba_genome.data.fasta import iter_fasta_records

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_order_task", ROOT / "benchmarks" / "make_order_task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _records(path):
    return [seq.decode().upper() if isinstance(seq, bytes) else seq.upper() for _, seq in iter_fasta_records(path)]


def test_records_hold_both_motifs_in_class_order(tmp_path, capsys):
    mod = _script()
    assert mod.main(["--out", str(tmp_path), "--records", "40", "--length", "300", "--min-gap", "50"]) == 0
    line = capsys.readouterr().out
    m1 = line.split("M1=")[1].split()[0].rstrip(",")
    m2 = line.split("M2=")[1].split(",")[0]
    assert len(m1) == len(m2) == 12
    with open(tmp_path / "manifest.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert {(r["label"], r["split"]) for r in rows} == {(c, s) for c in ("M1_first", "M2_first")
                                                       for s in ("train", "val", "test")}
    for r in rows:
        seqs = _records(r["fasta"])
        assert len(seqs) == (40 if r["split"] == "train" else 8)
        first, second = (m1, m2) if r["label"] == "M1_first" else (m2, m1)
        for s in seqs:
            assert len(s) == 300 and set(s) <= set("ACGT")
            assert s.count(first) == 1 and s.count(second) == 1
            assert s.index(second) - (s.index(first) + len(first)) >= 50


def test_kmer_baseline_is_at_chance(tmp_path):
    """Same motifs, same background: 6-mer counts carry no class signal."""
    from mamba_genome.data.tokenizer import encode
    from mamba_genome.workflows.kmer_baseline import kmer_baseline
    mod = _script()
    mod.main(["--out", str(tmp_path), "--records", "300", "--length", "400", "--min-gap", "100", "--seed", "3"])
    data = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for k, label in enumerate(("M1_first", "M2_first")):
            for s in _records(tmp_path / f"{label}.{split}.fa"):
                xs.append(encode(s))
                ys.append(k)
        data[split] = (xs, np.array(ys))
    res = kmer_baseline(data["train"][0], data["train"][1], data["test"][0], data["test"][1], k=6)
    assert 0.3 < res["accuracy"] < 0.7, res
