"""Tests for train/val/test splits (mamba_genome.data.splits) and window datasets (data.sampler)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mamba_genome.data.sampler import RandomWindowDataset, TiledWindowDataset
from mamba_genome.data.splits import Region, SplitPlan, make_splits
from mamba_genome.data.store import ingest
from mamba_genome.data.tokenizer import N, reverse_complement_tokens
from mamba_genome.errors import InputFileError, RegionError, UserError

DATA = Path(__file__).parent / "data"
UMAYDIS = ["Umaydis:chr01:1:+:2476500", "Umaydis:chr02:1:+:1879391", "Umaydis:chr03:1:+:1633472"]


def _store(tmp_path, name):
    src = tmp_path / name
    shutil.copy(DATA / name, src)
    return ingest(src, tmp_path / (name + ".mgstore"), progress=False)


@pytest.fixture
def umaydis(tmp_path):
    return _store(tmp_path, "umaydis_3contigs.fa")  # 3 contigs x 1,200 bp


@pytest.fixture
def with_gaps(tmp_path):
    return _store(tmp_path, "all_n_contig.fa")  # chrA 420, gap_only 280 (all N), chrC 420


def _assert_disjoint_cover(plan: SplitPlan, store, exclude=()):
    covered = {n: np.zeros(l, dtype=np.int8) for n, l in store.lengths.items()}
    for split in ("train", "val", "test"):
        for r in plan.regions(split):
            assert r.split == split and r.length > 0
            covered[r.contig][r.start : r.end] += 1
    for name, cov in covered.items():
        assert cov.max() <= 1, f"overlap in {name}"
        if name not in exclude:
            assert cov.min() == 1, f"gap in {name}"


# ----------------------------------------------------------------------- splits


def test_default_tails_split(umaydis):
    plan = make_splits(umaydis, val_fraction=0.1, test_fraction=0.05)
    _assert_disjoint_cover(plan, umaydis)
    assert plan.bp("test") == 3 * 60 and plan.bp("val") == 3 * 120 and plan.bp("train") == 3 * 1020
    t = plan.regions("test")[0]
    assert (t.start, t.end) == (1140, 1200)
    assert "contig tails" in plan.describe() and "test 180 bp" in plan.describe()
    assert make_splits(umaydis, val_fraction=0.1, test_fraction=0.05).to_json() == plan.to_json()  # deterministic


def test_one_contig_bacterium_gets_three_splits(tmp_path):
    store = _store(tmp_path, "ecoli_MG1655_3kb.fa")
    plan = make_splits(store)
    assert all(plan.bp(s) > 0 for s in ("train", "val", "test"))
    _assert_disjoint_cover(plan, store)


def test_all_n_contig_left_out(with_gaps):
    plan = make_splits(with_gaps)
    assert all(r.contig != "gap_only" for s in ("train", "val", "test") for r in plan.regions(s))
    _assert_disjoint_cover(plan, with_gaps, exclude={"gap_only"})


def test_split_by_contig(umaydis):
    plan = make_splits(umaydis, val_contigs=[UMAYDIS[1]], test_contigs=[UMAYDIS[2]])
    _assert_disjoint_cover(plan, umaydis)
    assert [r.contig for r in plan.regions("validation")] == [UMAYDIS[1]]
    assert [r.contig for r in plan.regions("test")] == [UMAYDIS[2]]
    assert plan.bp("train") == 1200
    assert "by contig" in plan.describe()


def test_split_by_contig_errors(umaydis):
    with pytest.raises(RegionError, match="unknown contig 'chr9'.*Umaydis:chr01"):
        make_splits(umaydis, test_contigs=["chr9"])
    with pytest.raises(UserError, match="both"):
        make_splits(umaydis, val_contigs=[UMAYDIS[0]], test_contigs=[UMAYDIS[0]])
    with pytest.raises(UserError, match="at least one for training"):
        make_splits(umaydis, val_contigs=UMAYDIS[:2], test_contigs=UMAYDIS[2:])
    with pytest.raises(UserError, match="test-fraction must be in"):
        make_splits(umaydis, test_fraction=1.5)


def test_split_from_bed(umaydis, tmp_path):
    bed = tmp_path / "sequences.bed"
    c1, c2, c3 = UMAYDIS
    bed.write_text(f"{c1}\t0\t1000\ttrain\n{c1}\t1000\t1200\tvalid\n{c2}\t0\t1200\ttest\n{c3}\t100\t900\ttrain\n")
    plan = make_splits(umaydis, bed=bed)
    _assert_disjoint_cover(plan, umaydis, exclude={c3})
    assert (plan.bp("train"), plan.bp("val"), plan.bp("test")) == (1800, 200, 1200)
    # a named split column in a header line
    bed2 = tmp_path / "named.bed"
    bed2.write_text(f"#chrom\tsplit\tstart\tend\n{c1}\t0\t600\n")
    with pytest.raises(InputFileError):
        make_splits(umaydis, bed=bed2)  # start/end must still be columns 2-3


@pytest.mark.parametrize("line,msg", [
    ("{c}\t0\t100", "expected 'chrom start end split'"),
    ("{c}\tzero\t100\ttrain", "must be integers"),
    ("{c}\t0\t100\tholdout", "split must be train"),
    ("chrZ\t0\t100\ttrain", "contig 'chrZ' is not in the store"),
    ("{c}\t100\t5000\ttrain", "outside the contig"),
    ("{c}\t0\t500\ttrain\n{c}\t400\t800\ttest", "overlap"),
])
def test_bed_errors_report_line_numbers(umaydis, tmp_path, line, msg):
    bed = tmp_path / "bad.bed"
    bed.write_text("# comment\n" + line.format(c=UMAYDIS[0]) + "\n")
    with pytest.raises(InputFileError, match=msg) as exc:
        make_splits(umaydis, bed=bed)
    if msg != "overlap":
        assert "bad.bed:2" in str(exc.value)


def test_overlap_is_rejected_and_json_roundtrip():
    with pytest.raises(RegionError, match="overlap"):
        SplitPlan([Region("a", 0, 10, "train"), Region("a", 5, 15, "val")], "x")
    plan = SplitPlan([Region("a", 0, 10, "train"), Region("a", 10, 15, "test")], "manual")
    again = SplitPlan.from_json(plan.to_json())
    assert again.regions("test") == plan.regions("test") and again.describe() == plan.describe()
    with pytest.raises(UserError, match="unknown split"):
        plan.regions("dev")


# ----------------------------------------------------------------------- samplers


def test_random_windows_deterministic_and_in_bounds(umaydis):
    plan = make_splits(umaydis, val_fraction=0.1, test_fraction=0.1)
    regions = plan.regions("train")
    ds = RandomWindowDataset(umaydis.path, regions, 256, samples_per_epoch=50, rc_prob=0.0, seed=3)
    assert len(ds) == 50
    first = [ds[i]["input_ids"] for i in range(50)]
    assert all(x.dtype == torch.long and x.shape == (256,) for x in first)
    assert all(torch.equal(a, ds[i]["input_ids"]) for i, a in enumerate(first))  # same (seed, epoch, i)
    # every window is a contiguous slice of a train region
    train_seqs = {r.contig: umaydis.fetch(r.contig, r.start, r.end) for r in regions}
    for x in first:
        x = x.numpy().astype(np.uint8)
        assert any(_contains(seq, x) for seq in train_seqs.values())
    ds.set_epoch(1)
    assert not all(torch.equal(a, ds[i]["input_ids"]) for i, a in enumerate(first))
    other = RandomWindowDataset(umaydis.path, regions, 256, samples_per_epoch=50, rc_prob=0.0, seed=4)
    assert not all(torch.equal(a, other[i]["input_ids"]) for i, a in enumerate(first))


def _contains(seq: np.ndarray, window: np.ndarray) -> bool:
    hay, needle = seq.tobytes(), window.tobytes()
    return needle in hay


def test_random_windows_reverse_complement(umaydis):
    regions = make_splits(umaydis).regions("train")
    fwd = RandomWindowDataset(umaydis.path, regions, 128, samples_per_epoch=40, rc_prob=0.0, seed=0)
    rc = RandomWindowDataset(umaydis.path, regions, 128, samples_per_epoch=40, rc_prob=1.0, seed=0)
    for i in range(40):
        assert torch.equal(rc[i]["input_ids"], reverse_complement_tokens(fwd[i]["input_ids"]))
    half = RandomWindowDataset(umaydis.path, regions, 128, samples_per_epoch=200, rc_prob=0.5, seed=0)
    n_rc = sum(not torch.equal(half[i]["input_ids"], fwd_i) for i, fwd_i in
               ((i, RandomWindowDataset(umaydis.path, regions, 128, samples_per_epoch=200, rc_prob=0.0, seed=0)[i]["input_ids"]) for i in range(200)))
    assert 60 < n_rc < 140


def test_random_windows_filter_n(tmp_path):
    # One region half N: windows crossing into the N run are redrawn.
    src = tmp_path / "gappy.fa"
    acgt = (DATA / "ecoli_MG1655_3kb.fa").read_text().splitlines()[1] * 10  # 700 bp of E. coli
    src.write_text(">g\n" + acgt + "N" * 700 + "\n")
    store = ingest(src, progress=False)
    ds = RandomWindowDataset(store.path, [Region("g", 0, 1400, "train")], 100, samples_per_epoch=100,
                             max_n_fraction=0.1, rc_prob=0.0)
    for i in range(100):
        x = ds[i]["input_ids"]
        assert int((x == N).sum()) <= 10


def test_all_n_only_never_sampled(with_gaps):
    regions = make_splits(with_gaps, val_fraction=0, test_fraction=0).regions("train")
    ds = RandomWindowDataset(with_gaps.path, regions, 100, samples_per_epoch=100)
    assert all(int((ds[i]["input_ids"] == N).sum()) == 0 for i in range(100))


def test_genome_shorter_than_window(umaydis):
    regions = make_splits(umaydis).regions("train")
    with pytest.raises(UserError, match="shorter than one window of 4,096 bp.*smaller --seq-len"):
        RandomWindowDataset(umaydis.path, regions, 4096, samples_per_epoch=10)
    with pytest.raises(UserError, match="smaller --seq-len"):
        TiledWindowDataset(umaydis.path, regions, 4096)
    ds = RandomWindowDataset(umaydis.path, regions, 64, samples_per_epoch=10)
    with pytest.raises(UserError):
        ds.set_seq_len(5000)


def test_set_seq_len_warmup(umaydis):
    regions = make_splits(umaydis).regions("train")
    ds = RandomWindowDataset(umaydis.path, regions, 64, samples_per_epoch=10)
    assert ds[0]["input_ids"].shape == (64,)
    ds.set_seq_len(512)
    assert ds[0]["input_ids"].shape == (512,)


def test_tiled_windows(with_gaps):
    regions = [Region("chrA", 0, 420, "val"), Region("gap_only", 0, 280, "val"), Region("chrC", 0, 420, "val")]
    ds = TiledWindowDataset(with_gaps.path, regions, 100)
    items = [ds[i] for i in range(len(ds))]
    assert [(x["contig"], x["start"]) for x in items] == [("chrA", s) for s in (0, 100, 200, 300)] + \
        [("chrC", s) for s in (0, 100, 200, 300)]  # all-N tiles skipped, tails dropped
    for x in items:
        assert torch.equal(x["input_ids"], torch.from_numpy(with_gaps.fetch(x["contig"], x["start"], x["start"] + 100).astype(np.int64)))
    sub = TiledWindowDataset(with_gaps.path, regions, 100, max_windows=3)
    assert [(sub[i]["contig"], sub[i]["start"]) for i in range(len(sub))] == [("chrA", 0), ("chrC", 0), ("chrC", 300)]  # evenly spaced: tiles 0, 4, 7


def test_datasets_pickle_without_memmaps(umaydis):
    regions = make_splits(umaydis).regions("train")
    ds = RandomWindowDataset(str(umaydis.path), regions, 64, samples_per_epoch=8)
    x = ds[3]["input_ids"]  # opens the store in this process
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2._store is None and torch.equal(ds2[3]["input_ids"], x)
    tiles = TiledWindowDataset(umaydis, regions, 64)  # an open TokenStore works too
    assert pickle.loads(pickle.dumps(tiles))[0]["start"] == 0


def test_dataloader_with_workers(umaydis):
    from torch.utils.data import DataLoader

    regions = make_splits(umaydis).regions("train")
    ds = RandomWindowDataset(umaydis.path, regions, 64, samples_per_epoch=16, seed=1)
    batches = list(DataLoader(ds, batch_size=8, num_workers=2))
    assert [b["input_ids"].shape for b in batches] == [(8, 64), (8, 64)]
    assert torch.equal(batches[1]["input_ids"][0], ds[8]["input_ids"])


def test_fixed_windows_core_tiles_and_subsets():
    """data/windows.py lays out every fixed window (pretrain validation tiles, finetune val/test windows):
    non-overlapping tiles inside the region, those over the N limit skipped, the tail dropped; the subset
    evenly spaced from first to last. Reading in small blocks changes nothing."""
    import numpy as np

    from mamba_genome.data.tokenizer import A, N
    from mamba_genome.data.windows import evenly_spaced, tile_starts

    tokens = np.full(1000, A, dtype=np.uint8)
    tokens[130:170] = N      # tile [100, 140) is 25% N (kept), tile [140, 180) 75% N (skipped)
    got = tile_starts(tokens, 100, 350, 40)  # region [100, 450): 8 whole tiles, the 30-base tail dropped
    assert got.tolist() == [100, 180, 220, 260, 300, 340, 380]
    assert tile_starts(tokens, 100, 350, 40, block_bytes=40).tolist() == got.tolist()
    assert tile_starts(tokens, 100, 350, 40, max_n_fraction=1.0).tolist() == list(range(100, 420, 40))
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9] and evenly_spaced(3, 10).tolist() == [0, 1, 2]
    assert evenly_spaced(0, 4).tolist() == []
