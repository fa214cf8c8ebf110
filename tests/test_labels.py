"""Labelled-genome manifests, per-class splits and class-balanced window sampling."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mamba_genome.data.labels import (BalancedWindowDataset, EpochSampler, FixedWindowDataset, build_task,
                                      parse_class_pairs, parse_manifest)
from mamba_genome.data.store import TokenStore
from mamba_genome.errors import InputFileError, UserError

DATA = Path(__file__).parent / "data"
COL, N315 = "saureus_COL_8k.fa", "saureus_N315_8k.fa"


@pytest.fixture()
def fastas(tmp_path):
    """The two 8 kbp S. aureus slices copied to tmp_path (ingest writes stores beside them)."""
    for name in (COL, N315, "vcholerae_H1_2chrom.fa"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_manifest_relative_paths_and_splits(fastas):
    sub = fastas / "meta"
    sub.mkdir()
    m = _write(sub / "m.tsv", "# comment\nlabel\tfasta\tsplit\nCOL\t../saureus_COL_8k.fa\ttrain\n"
                              f"COL\t{fastas / COL}\tTEST\nN315\t../saureus_N315_8k.fa\t\n")
    src = parse_manifest(m)
    assert [(s.label, s.split) for s in src] == [("COL", "train"), ("COL", "test"), ("N315", None)]
    assert src[0].fasta.resolve() == (fastas / COL).resolve()
    assert src[0].where.endswith("m.tsv:3")


def test_manifest_without_split_column(fastas):
    m = _write(fastas / "m.tsv", f"fasta\tlabel\n{COL}\tCOL\n{N315}\tN315\n")
    assert [(s.label, s.split) for s in parse_manifest(m)] == [("COL", None), ("N315", None)]


@pytest.mark.parametrize("body, match", [
    pytest.param(f"label\tfasta\tsplit\nCOL\t{COL}\ttraining\nN315\t{N315}\t\n", r"m\.tsv:2: split must be", id="bad-split"),
    pytest.param(f"label\tfasta\nCOL\t{COL}\n\t{N315}\n", r"m\.tsv:3: empty label", id="empty-label"),
    pytest.param(f"label\tfasta\nCOL\t{COL}\nN315\t\n", r"m\.tsv:3: empty FASTA path", id="empty-fasta"),
    pytest.param(f"label\tfasta\nCOL\t{COL}\nN315\tnope.fa\n", r"m\.tsv:3: FASTA .*nope\.fa.* does not exist", id="missing-fasta"),
    pytest.param(f"name\tpath\nCOL\t{COL}\n", r"header must name", id="no-header"),
    pytest.param("", r"manifest is empty", id="empty"),
    pytest.param("label\tfasta\n", r"no classes", id="header-only"),
    pytest.param(f"label\tfasta\nCOL\t{COL}\n", r"at least 2 classes", id="one-class"),
])
def test_manifest_errors(fastas, body, match):
    m = _write(fastas / "m.tsv", body)
    with pytest.raises(UserError, match=match):
        parse_manifest(m)


def test_manifest_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="no such manifest"):
        parse_manifest(tmp_path / "absent.tsv")


@pytest.mark.parametrize("pairs, match", [
    (["COL"], "LABEL=FASTA"), (["=x.fa"], "LABEL=FASTA"), (["COL=absent.fa", "B=absent2.fa"], "no such file"),
])
def test_class_pair_errors(pairs, match):
    with pytest.raises(UserError, match=match):
        parse_class_pairs(pairs)


def _overlaps(regions):
    by = {}
    for r in regions:
        by.setdefault((r.store, r.contig), []).append((r.start, r.end, r.split))
    for spans in by.values():
        spans.sort()
        for (s0, e0, _), (s1, e1, _) in zip(spans, spans[1:]):
            if s1 < e0:
                return True
    return False


def test_tail_split_is_disjoint_and_reported(fastas):
    task = build_task(parse_class_pairs([f"COL={fastas / COL}", f"VC={fastas / 'vcholerae_H1_2chrom.fa'}"]),
                      val_fraction=0.1, test_fraction=0.2, progress=False)
    assert task.labels == ["COL", "VC"]
    assert not _overlaps(task.regions)
    assert task.bases("train", 0) == 5600 and task.bases("val", 0) == 800 and task.bases("test", 0) == 1600
    # Both V. cholerae records contribute a tail to every split.
    assert {r.contig for r in task.split_regions("test", 1)} == set(TokenStore.open(task.regions[-1].store).names)
    rows = task.describe_rows()
    assert rows[0]["label"] == "COL" and "tails" in rows[0]["split"]


def test_explicit_splits_and_carved_val(fastas):
    m = _write(fastas / "m.tsv", f"label\tfasta\tsplit\nCOL\t{COL}\ttrain\nN315\t{N315}\ttrain\n"
                                 f"COL\tvcholerae_H1_2chrom.fa\ttest\nN315\tvcholerae_H1_2chrom.fa\ttest\n")
    task = build_task(parse_manifest(m), val_fraction=0.25, progress=False)
    assert task.bases("train", 0) == 6000 and task.bases("val", 0) == 2000  # carved from the train tail
    assert "carved" in task.methods["COL"]
    assert not _overlaps([r for r in task.regions if r.label == 0])


def test_class_without_test_data(fastas):
    m = _write(fastas / "m.tsv", f"label\tfasta\tsplit\nCOL\t{COL}\ttrain\nN315\t{N315}\t\n")
    with pytest.raises(UserError, match="class 'COL' has no test data"):
        build_task(parse_manifest(m), progress=False)


def test_no_usable_window(fastas):
    task = build_task(parse_class_pairs([f"COL={fastas / COL}", f"N315={fastas / N315}"]), progress=False)
    task.check_windows(800)
    with pytest.raises(UserError, match=r"class 'COL' has no usable val window of 801 bp .*--seq-len"):
        task.check_windows(801)


@pytest.fixture()
def task(fastas):
    return build_task(parse_class_pairs([f"COL={fastas / COL}", f"N315={fastas / N315}"]), progress=False)


def test_balanced_windows_deterministic_fresh_and_inside_train(task):
    train = task.split_regions("train")
    ds = BalancedWindowDataset(train, 2, 64, samples_per_epoch=400, seed=3)
    w = [ds.window(0, 64, i) for i in range(400)]
    assert [x[3] for x in w[:20]] == [ds.window(0, 64, i)[3] for i in range(20)]  # pure function of (epoch, i)
    assert [x[3] for x in w[:20]] != [ds.window(1, 64, i)[3] for i in range(20)]  # fresh each epoch
    labels = np.array([x[0] for x in w])
    assert 150 < (labels == 0).sum() < 250  # a class is picked uniformly
    for k, store, contig, start, tokens in w:
        assert any(r.label == k and r.contig == contig and r.start <= start and start + 64 <= r.end for r in train)
        fwd = TokenStore.open(store).fetch(contig, start, start + 64)
        rc = (np.array([0, 1, 2, 3, 4, 8, 7, 6, 5, 9])[fwd])[::-1]
        assert np.array_equal(tokens, fwd) or np.array_equal(tokens, rc)
    item = ds[(2, 32, 5)]
    assert item["input_ids"].shape == (32,) and item["label"].ndim == 0


def test_epoch_sampler_shards_ranks():
    keys = [list(EpochSampler(10, lambda e: 16 << e, rank=r, world=3)) for r in range(3)]
    assert sorted(k[2] for ks in keys for k in ks) == list(range(10))
    s = EpochSampler(4, lambda e: 16 << e)
    s.set_epoch(2)
    assert list(s) == [(2, 64, i) for i in range(4)] and len(s) == 4


def test_fixed_windows_deterministic_and_disjoint_from_train(task):
    test = FixedWindowDataset(task.split_regions("test"), 2, 100, per_class=5)
    again = FixedWindowDataset(task.split_regions("test"), 2, 100, per_class=5)
    assert test.windows == again.windows
    assert list(test.labels) == [0] * 5 + [1] * 5
    starts = [w[3] for w in test.windows]
    assert all(s >= 7200 and s + 100 <= 8000 for s in starts)  # inside the 10% test tail
    assert len(set(starts[:5])) == 5 and all(b - a >= 100 for a, b in zip(starts, starts[1:5]))
    assert test[0]["input_ids"].shape == (100,)


def test_manifest_contigs_column_splits_one_fasta_by_chromosome(fastas):
    vc = "vcholerae_H1_2chrom.fa"
    names = [line[1:].split()[0] for line in (fastas / vc).read_text().splitlines() if line.startswith(">")]
    m = _write(fastas / "m.tsv", f"label\tfasta\tsplit\tcontigs\nVC\t{vc}\ttrain\t{names[0]}\nVC\t{vc}\ttest\t{names[1]}\n"
                                 f"COL\t{COL}\t\t\n")
    src = parse_manifest(m)
    assert src[0].contigs == (names[0],) and src[2].contigs is None
    task = build_task(src, progress=False)
    assert {r.contig for r in task.split_regions("train", 0)} == {names[0]}
    assert {r.contig for r in task.split_regions("test", 0)} == {names[1]}
    bad = _write(fastas / "bad.tsv", f"label\tfasta\tsplit\tcontigs\nVC\t{vc}\ttrain\tchr9\nCOL\t{COL}\t\t\n")
    with pytest.raises(InputFileError, match=r"bad\.tsv:2: contig 'chr9' is not in"):
        build_task(parse_manifest(bad), progress=False)


def test_label_of_matches_window(task):
    ds = BalancedWindowDataset(task.split_regions("train"), 2, 64, samples_per_epoch=10, seed=5)
    assert [ds.label_of(1, i) for i in range(10)] == [ds.window(1, 32, i)[0] for i in range(10)]


def test_class_with_only_n_is_an_error(fastas):
    _write(fastas / "gaps.fa", ">gap\n" + "N" * 500 + "\n")
    m = _write(fastas / "m.tsv", f"label\tfasta\nCOL\t{COL}\nGAP\tgaps.fa\n")
    with pytest.raises(UserError, match=r"m\.tsv:3: .*gaps\.fa has only all-N contigs; class 'GAP'"):
        build_task(parse_manifest(m), progress=False)
