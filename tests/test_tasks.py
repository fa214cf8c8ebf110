"""benchmarks/tasks: splits, window construction, the four classifier stages, the CLI; labels' whole-record split.

Everything runs on the 8-kbp S. aureus slices in tests/data (genes from pyrodigal's metagenomic
mode, which needs no training on a long genome) or on synthetic sequence, at tiny sizes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.tasks import apes, baselines, coding, common, order, pretraining, species, start_codon, strain, umaydis
from benchmarks.tasks.cli import main as tasks_main
from benchmarks.tasks.common import WindowSet
from benchmarks.tasks.genes import call_genes, verify
from benchmarks.tasks.metrics import auroc, score_predictions, wilson
from mamba_genome.data.tokenizer import decode, encode
from mamba_genome.model.classifier import POOLINGS

DATA = Path(__file__).parent / "data"
SLICES = {"COL": "saureus_COL_8k.fa", "N315": "saureus_N315_8k.fa"}
TINY = {"d_model": 16, "n_layer": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions and scans: on a shared 2-core machine a second thread only spins."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _windows(ws: WindowSet, split=None) -> list[str]:
    idx = range(len(ws.y)) if split is None else np.flatnonzero(ws.split == split)
    return [decode(ws.tokens[i]) for i in idx]


def _no_cross_split_overlap(ws: WindowSet):
    seen = {}
    for s, w in zip(ws.split, _windows(ws)):
        assert seen.setdefault(w, s) == s, "a window occurs in two splits"


# ------------------------------------------------------------------------- splits


def test_block_splits_cover_interleave_and_run_across_contigs():
    blocks = common.block_splits(10_050, 100)
    assert blocks[0][0] == 0 and blocks[-1][1] == 10_050
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    splits = [b[2] for b in blocks[:100]]
    assert splits.count("train") == 80 and splits.count("val") == 10 and splits.count("test") == 10
    assert common.split_of(blocks, 0, 100) == "train" and common.split_of(blocks, 50, 150) is None
    assert common.split_of(blocks, 950, 1000) == "test"
    # many short contigs: the pattern continues, so val and test still get their share
    g = {f"c{i}": b"A" * 250 for i in range(40)}  # 3 blocks of 100 each
    per = [b[2] for bl in common.genome_blocks(g, 100).values() for b in bl]
    assert per.count("test") == 12 and per.count("val") == 12


def test_gc_matched_equalises_histograms():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.3, 0.7, 500), rng.uniform(0.4, 0.9, 800)
    ia, ib = common.gc_matched(a, b, rng, bins=10)
    assert len(ia) == len(ib) > 50
    assert np.array_equal(np.histogram(a[ia], 10, (0, 1))[0], np.histogram(b[ib], 10, (0, 1))[0])


# -------------------------------------------------------------------- gene tasks


@pytest.fixture(scope="module")
def slice_genes():
    out = {}
    for name, f in SLICES.items():
        genome = common.read_genome(DATA / f)
        out[name] = (genome, call_genes(genome, meta=True))
    return out


def test_gene_calls_translate(slice_genes):
    for genome, genes in slice_genes.values():
        rep = verify(genome, genes)
        assert rep["complete"] >= 5
        assert rep["start_M"] == rep["ends_with_stop"] == rep["complete"] and rep["internal_stop"] == 0


def test_coding_candidates_inside_genes_or_gene_free(slice_genes):
    for genome, genes in slice_genes.values():
        (contig, seq), = genome.items()
        covered = np.zeros(len(seq), bool)
        for g in genes:
            covered[g.start:g.end] = True
        n = {0: 0, 1: 0}
        for label, split, w in coding.candidates(genome, genes, 64, 10_000):
            pos = seq.find(w)
            assert pos >= 0 and split in common.SPLITS
            if label == 0:
                assert any(g.start <= pos and pos + 64 <= g.end for g in genes)
            else:
                assert not covered[pos:pos + 64].any()
            n[label] += 1
        assert n[0] > 10 and n[1] > 0


def test_start_codon_windows_centre_an_atg(slice_genes):
    rng = np.random.default_rng(0)
    for genome, genes in slice_genes.values():
        (contig, seq), = genome.items()
        cds = [g.cds(seq) for g in genes if not g.partial]
        n = {0: 0, 1: 0}
        for label, split, w in start_codon.candidates(genome, genes, 128, 10_000, rng):
            assert w[64:67] == b"ATG"
            downstream = w[64:]
            if label == 0:
                assert any(c.startswith(downstream) for c in cds)
            else:  # in frame, at least MIN_INTERNAL into a gene, window inside its body
                hits = [c.find(w) for c in cds if w in c]
                assert any(h >= 0 and (h + 64) % 3 == 0 and h + 64 >= start_codon.MIN_INTERNAL for h in hits)
            n[label] += 1
        assert n[0] >= 3 and n[1] >= 2


def test_coding_prepare_balanced_gc_matched_disjoint(tmp_path):
    genomes = {name: f for name, f in SLICES.items()}
    ws = coding.prepare(DATA, tmp_path, genomes=genomes, seq_len=32, block=300, meta_genes=True, per_gene=100)
    for s, per in ws.counts().items():
        assert per["coding"] == per["noncoding"] > 0
    _no_cross_split_overlap(ws)
    assert "pyrodigal" in ws.provenance["genes"]
    assert ws.provenance["genomes"]["COL"]["gene_check"]["internal_stop"] == 0
    for s in common.SPLITS:  # GC-matched per bin of 0.05
        g0 = ws.gc[(ws.split == s) & (ws.y == 0)]
        g1 = ws.gc[(ws.split == s) & (ws.y == 1)]
        assert abs(g0.mean() - g1.mean()) < 0.05
    assert (tmp_path / "_genes" / "saureus_COL_8k.tsv").is_file()  # cached gene calls


# ------------------------------------------------------ U. maydis gene models


@pytest.fixture(scope="module")
def um():
    genome = common.read_genome(DATA / "umaydis_chr01_19-33kb.fa")
    models, check = umaydis.gene_models(genome, DATA / "umaydis_chr01_19-33kb.gff3")
    return genome, models, check


def test_umaydis_models_translate(um):
    genome, models, check = um
    assert check == {"models": 6, "start_M": 6, "ends_with_stop": 6, "internal_stop": 0, "used": 6}
    assert sorted(len(m.segments) for m in models) == [1, 1, 1, 1, 2, 2]
    with pytest.raises(common.UserError, match="maffilter-examples"):
        umaydis.gene_models(genome, DATA / "missing.gff3")


def test_umaydis_donor_and_decoy_windows(um):
    genome, models, _ = um
    (seq,) = genome.values()
    expected = set()
    for m in models:  # donors from the coordinates: exon end at base 31, intron GT at 32
        for (a, b), (c, d) in zip(m.segments, m.segments[1:]):
            expected.add(seq[b - 32:b + 32] if m.strand == "+" else common.revcomp(seq[c - 32:c + 32]))
    got = list(umaydis.donor_candidates(genome, models, 64, 10**6, np.random.default_rng(0)))
    assert {w for lab, _, w in got if lab == 0} == expected and len(expected) == 2
    decoys = [w for lab, _, w in got if lab == 1]
    assert len(decoys) >= 6
    segs = [seq[a:b] for m in models for a, b in m.segments]
    for w in decoys:
        assert w[32:34] == b"GT" and any(w in x or common.revcomp(w) in x for x in segs)


def test_umaydis_coding_windows(um):
    genome, models, _ = um
    (seq,) = genome.values()
    genic = np.zeros(len(seq), bool)
    for m in models:
        genic[m.segments[0][0]:m.segments[-1][1]] = True
    n = {0: 0, 1: 0}
    for lab, _, w in umaydis.coding_candidates(genome, models, 64, 10**6):
        pos = seq.find(w)
        if lab == 0:
            assert any(a <= pos and pos + 64 <= b for m in models for a, b in m.segments)
        else:
            assert not genic[pos:pos + 64].any()
        n[lab] += 1
    assert n[0] == 16 and n[1] > 20


# --------------------------------------------------------------- strain and order


def test_strain_tiles_balance_and_homologs_share_a_split(tmp_path):
    rng = np.random.default_rng(0)
    ref = bytes(np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, 6000)])
    island = bytes(np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, 700)])
    other = ref[:2000] + island + ref[2000:]  # same core, shifted by an insertion
    for name, seq in (("ref", ref), ("other", other)):
        (tmp_path / f"{name}.fa").write_text(f">{name}\n{seq.decode()}\n")
    ws = strain.prepare(tmp_path, files={"ref": "ref.fa", "other": "other.fa"}, seq_len=100, block=500,
                        per_class={"train": 10**6, "val": 10**6, "test": 10**6})
    counts = ws.counts()
    assert all(per["ref"] == per["other"] > 0 for per in counts.values())
    ref_blocks = common.block_splits(len(ref), 500)
    split_of_window = {}
    for w, s, y in zip(_windows(ws), ws.split, ws.y):
        split_of_window.setdefault(w, set()).add(s)
        if y == 0:
            pos = ref.find(w.encode())
            assert pos % 100 == 0 and common.split_of(ref_blocks, pos, pos + 1) == s
    # a tile of `other` that is a shifted copy of reference sequence takes the reference's split
    for w, s, y in zip(_windows(ws), ws.split, ws.y):
        pos = ref.find(w.encode())
        if y == 1 and pos >= 0:
            assert common.split_of(ref_blocks, pos, pos + 1) == s
    assert ws.provenance["anchored"]["ref"] == 1.0 and 0.8 < ws.provenance["anchored"]["other"] < 1.0


def _order_ok(ws: WindowSet, gap: int):
    m1, m2 = ws.provenance["M1"], ws.provenance["M2"]
    for w, y in zip(_windows(ws), ws.y):
        first, second = (m1, m2) if y == 0 else (m2, m1)
        assert w.count(first) == 1 and w.count(second) == 1
        assert w.index(second) - (w.index(first) + len(first)) >= gap


def test_order_short_and_its_kmer_baseline_at_chance():
    ws = order.prepare_short(per_class={"train": 150, "val": 50, "test": 100}, seq_len=160, min_gap=40, seed=1)
    _order_ok(ws, 40)
    r = baselines.kmer_stage(ws, ks=(4, 5), cs=(0.1,), log=lambda m: None)
    assert r["chosen"]["k"] in (4, 5) and len(r["grid"]) == 2
    assert 0.35 < r["accuracy"] < 0.65 and r["accuracy_ci95"][0] < 0.5 < r["accuracy_ci95"][1]


def test_order_long_real_background(tmp_path):
    ws = order.prepare_long(DATA, files=tuple(SLICES.values()), seq_len=400, min_gap=250, block=800, motif_len=10)
    _order_ok(ws, 250)
    backgrounds = [s for f in SLICES.values() for s in common.read_genome(DATA / f).values()]
    m1 = ws.provenance["M1"].encode()
    assert not any(m1 in s or common.revcomp(m1) in s for s in backgrounds)
    for s in common.SPLITS:
        c = ws.counts()[s]
        assert abs(c["M1_first"] - c["M2_first"]) <= 1


# ------------------------------------------------------------------------ metrics


# ------------------------------------------------------------ apes and species


def _write_maf(path: Path, n_blocks: int = 20, size: int = 3000, seed: int = 0) -> Path:
    """A MAF of the four apes: block i at human 100,000 * i (so blocks cycle through the 8:1:1 pattern),
    each ape a mutated copy of a random ancestor, with gaps; a second block 500 bp after each joins it."""
    rng = np.random.default_rng(seed)
    acgt = np.frombuffer(b"ACGT", np.uint8)
    lines = ["##maf version=1", ""]
    for i in range(n_blocks):
        for start in (100_000 * i, 100_000 * i + size + 500):
            anc = acgt[rng.integers(0, 4, size)]
            lines.append("a")
            for code in apes.SPECIES:
                s = anc.copy()
                hit = rng.random(size) < 0.05
                s[hit] = acgt[rng.integers(0, 4, int(hit.sum()))]
                row = bytearray(s.tobytes().lower() if code == "Ptro" else s.tobytes())
                row[10:13] = b"---"
                lines.append(f"s {code}.22 {start if code == 'Hsap' else 0} {size - 3} + 1 {row.decode()}")
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_maf_real_slice_ungapped_upper():
    blocks = apes.read_maf(DATA / "apes_chr22_3blocks.maf")
    assert len(blocks) == 3 and blocks[0].start == 17443628 and blocks[0].end == 17443628 + 160
    assert set(blocks[0].seqs) == set(apes.SPECIES)
    for b in blocks:
        for s in b.seqs.values():
            assert b"-" not in s and s == s.upper()
    assert len(blocks[2].seqs["Ptro"]) == 159  # one gap column in the chimp row
    assert len(blocks[1].seqs["Hsap"]) == 158 and blocks[1].seqs["Hsap"].startswith(b"CCAATGTCC")


def test_great_apes_orthologues_share_a_split(tmp_path):
    maf = _write_maf(tmp_path / "apes.maf")
    runs = apes.runs(apes.read_maf(maf))
    assert len(runs) == 20 and all(len(r[2]["Hsap"]) == 2 * 2997 for r in runs)  # two blocks joined per run
    assert [r[0] for r in runs[:10]] == list(common.PATTERN)
    ws = apes.prepare(maf=maf, seq_len=512, per_class={"train": 40, "val": 6, "test": 6})
    assert ws.labels == ["human", "chimpanzee", "gorilla", "orangutan"] and ws.metric == "accuracy"
    assert all(ws.counts()["test"][lab] == 6 for lab in ws.labels)
    _no_cross_split_overlap(ws)
    # which split a window is in follows the human coordinate of its run, for every species
    by_split = {s: {w[:40] for w in _windows(ws, s)} for s in common.SPLITS}
    for split, _start, run in runs:
        for seq in run.values():
            for other in set(common.SPLITS) - {split}:
                assert not any(seq[i:i + 512][:40].decode() in by_split[other] for i in range(0, len(seq) - 511, 512))


def test_species_windows_keep_their_group_split(tmp_path):
    maf = _write_maf(tmp_path / "apes.maf")
    genomes = {"COL": (SLICES["COL"], 400), "N315": (SLICES["N315"], 400)}
    ws = species.prepare(DATA, maf=maf, genomes=genomes, seq_len=128, per_class={"train": 20, "val": 3, "test": 3})
    assert ws.labels == ["COL", "N315", "human"]
    assert all(n == 3 for n in ws.counts()["test"].values())
    # a COL test window lies in a test block of the 400-bp pattern
    col = common.read_genome(DATA / SLICES["COL"])
    contig, seq = next(iter(col.items()))
    blocks = common.genome_blocks(col, 400)[contig]
    for w in _windows(ws, "test")[:3]:
        i = seq.find(w.encode())
        assert i >= 0 and common.split_of(blocks, i, i + 128) == "test"


def test_pretraining_fasta_is_train_only(tmp_path):
    ws = _separable(n=40, L=64)
    ws.name = "order_short"
    ws.save(tmp_path / "tasks")
    dest = pretraining.write_group_fasta("order", tmp_path / "tasks", tmp_path / "order.fa.gz")
    recs = dict(common.read_genome(dest))
    assert list(recs)[:2] == ["lm_val", "lm_test"] and pretraining.held_out_bp(dest) == len(recs["lm_val"]) > 0
    train = {w for w in _windows(ws, "train")}
    held = {w for s in ("val", "test") for w in _windows(ws, s)}
    joined = b"".join(recs.values()).decode()
    assert sum(len(r) for r in recs.values()) == 64 * len(train)  # every train window, nothing else
    assert not any(w in joined for w in held)
    # genome groups: consecutive train blocks, joined; parts concatenate with one lm_val/lm_test
    g = {"c": bytes(np.frombuffer(b"ACGT", np.uint8)[np.random.default_rng(0).integers(0, 4, 2000)])}
    runs = list(pretraining._train_runs(g, 100))
    assert [len(r) for r in runs] == [400] * 4  # 4 train, val, 4 train, test, twice
    (tmp_path / "tasks" / "pretrain").mkdir()
    for part in ("umaydis", "bacteria", "apes_human"):
        held_recs, recs2 = pretraining._records(runs, part)
        pretraining._write(tmp_path / "tasks" / "pretrain" / f"{part}.fa.gz", held_recs + recs2)
    both = common.read_genome(pretraining.write_group_fasta("species", tmp_path / "tasks", tmp_path / "sp.fa.gz"))
    assert [n for n in both if n in ("lm_val", "lm_test")] == ["lm_val", "lm_test"]
    assert sum(map(len, both.values())) == 3 * 2000 * 0.8


def test_gpu_suite_fine_tunes_through_the_cli(tmp_path, tiny_model, capsys):
    """The GPU call's scheduler on CPU: a `mamba-genome finetune` process from one model, scored and recorded."""
    from benchmarks.tasks.gpu import GpuPlan, run_gpu

    ws = _separable(n=24, L=64)
    ws.save(tmp_path / "tasks")
    plan = GpuPlan(budget_s=170, finetune_max_s=3, finetune_setup_s=20, grace_s=10, ablate=("order_short",))
    rc = run_gpu(tmp_path / "tasks", tmp_path / "out", tmp_path / "out" / "tasks_gpu.json", tmp_path / "work",
                 ["order_short"], ["finetune"], plan, model=str(tiny_model))
    text = capsys.readouterr().out
    assert rc == 0, text
    got = json.loads((tmp_path / "out" / "tasks_gpu.json").read_text())["tasks"]["order_short"]
    # the default classifier reads both strands' passes; the ablation is the forward-only one
    assert set(got["results"]) == {"finetune", "finetune_fwd"} and got["majority_rate"] == 0.5
    assert "--strands both" in got["results"]["finetune"]["command"]
    assert "--strands fwd" in got["results"]["finetune_fwd"]["command"]
    assert "| order_short |" in (tmp_path / "out" / "tasks_gpu.md").read_text()
    assert got["results"]["finetune"]["n_test"] == 16 and got["results"]["finetune"]["command"].startswith(
        "mamba-genome finetune --manifest")
    assert "order_short finetune: test auroc" in text and text.startswith("[")
    assert (tmp_path / "out" / "runs" / "finetune_order_short" / "metrics.json").is_file()
    assert (tmp_path / "out" / "logs" / "finetune_order_short.log").is_file()
    assert "| order_short |" in (tmp_path / "out" / "tasks_gpu.md").read_text()


def test_gpu_suite_stops_what_runs_past_the_budget(tmp_path, capsys):
    import sys

    from benchmarks.tasks.gpu import GpuPlan, Suite

    suite = Suite(tmp_path, tmp_path / "out", tmp_path / "out" / "r.json", tmp_path / "w", [], [],
                  GpuPlan(budget_s=4, grace_s=2, finetune_setup_s=1))
    suite._spawn("probe", "slow", [sys.executable, "-c", "import time; time.sleep(60)"], part=tmp_path / "none.json")
    assert suite.run() == 1
    text = capsys.readouterr().out
    assert "probe slow: over the budget, SIGTERM" in text and "failed: probe slow" in text
    assert suite.now() < 10 and json.loads((tmp_path / "out" / "r.json").read_text()) == {"tasks": {}}


def test_metrics():
    lo, hi = wilson(90, 100)
    assert round(lo, 3) == 0.826 and round(hi, 3) == 0.945
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(0, 1, 300)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    r = score_predictions(y, np.zeros(300, int), np.stack([1 - s, s], 1), 2)
    assert r["one_class"] and r["max_predicted_share"] == 1.0 and r["auroc_ci95"][0] < r["auroc"] < r["auroc_ci95"][1]


# ------------------------------------------------------------------------- stages


def test_kmer_matrix_matches_dense_frequencies():
    from mamba_genome.workflows.kmer_baseline import kmer_frequencies

    toks = np.stack([encode("ACGTNACGGTTACGATCG"), encode("TTTTTTTTTTGGGGGGGG")])
    X = baselines.kmer_matrix(toks, 4).toarray()
    for row, t in zip(X, toks):
        np.testing.assert_allclose(row, kmer_frequencies(t, 4), rtol=1e-6)


def _separable(n=60, L=64, seed=0) -> WindowSet:
    """Class 0 AT-rich, class 1 GC-rich: any classifier should get it."""
    rng = np.random.default_rng(seed)
    seqs, ys, splits = [], [], []
    for split, m in (("train", n), ("val", n // 3), ("test", n // 3)):
        for k in (0, 1):
            p = [0.4, 0.1, 0.1, 0.4] if k == 0 else [0.1, 0.4, 0.4, 0.1]
            for _ in range(m):
                seqs.append(bytes(np.frombuffer(b"ACGT", np.uint8)[rng.choice(4, L, p=p)]))
                ys.append(k)
                splits.append(split)
    return WindowSet.from_sequences("order_short", ["at", "gc"], L, seqs, ys, splits, metric="auroc",
                                    provenance={"sequence": "synthetic test"})


def test_cnn_learns_and_stops_early():
    ws = _separable()
    r = baselines.cnn_stage(ws, max_epochs=4, patience=2, batch_size=16, log=lambda m: None)
    assert r["accuracy"] > 0.8 and r["auroc"] > 0.9
    assert r["epochs_run"] <= 4 and len(r["curve"]) == r["epochs_run"]
    assert r["stopped_by"] in ("early_stopping", "max_epochs")
    capped = baselines.cnn_stage(ws, max_epochs=4, batch_size=16, max_time_s=1e-3, log=lambda m: None)
    assert capped["epochs_run"] == 1 and capped["stopped_by"] == "time"
    from benchmarks.tasks.report import _cell

    assert "time cap after 1 epochs" in _cell(capped, "auroc")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from mamba_genome.checkpoint import save_model
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.lm import MambaLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(MambaLM(MambaConfig.from_preset("tiny", **TINY)), path)
    return path


def test_probe_picks_layer_pool_and_view_on_val(tiny_model):
    ws = _separable(n=30, L=48)
    r = baselines.probe_stage(ws, str(tiny_model), device="cpu", max_train=40, log=lambda m: None)
    # 2 layers: both mean-pooled, the last also last-token pooled; forward and forward+RC; two C
    assert {(g["layer"], g["pool"]) for g in r["grid"]} == {(0, "mean"), (1, "mean"), (1, "last")}
    assert {(g["view"], g["C"]) for g in r["grid"]} == {("fwd", 0.1), ("fwd", 1.0), ("fwd+rc", 0.1), ("fwd+rc", 1.0)}
    best = max(r["grid"], key=lambda g: g["val_accuracy"])
    assert r["val_accuracy"] == best["val_accuracy"] and r["train_windows"] == 40
    assert r["accuracy"] > 0.7 and r["n_test"] == 20
    assert baselines.probe_layers(12) == [4, 6, 8, 11]


def test_finetune_plan_sizes_by_task(tmp_path, monkeypatch):
    ws = _separable(n=640, L=64)  # 1,280 train windows
    p = baselines.finetune_plan(ws, max_time_s=100)
    assert p.batch_size == 64 and p.max_steps == 30 * 20 and p.val_every == 25 and p.warmup_steps == 30
    assert p.pooling == "mean" and p.max_time_s == 100
    # both strands' passes by default; an oriented task (the motif-order control) gets no RC augmentation
    assert (p.strands, p.rc_prob) == ("both", 0.0) and "order_short" in baselines.ORIENTED
    long = WindowSet("order_long", ["a", "b"], 8192, np.full((4, 8192), 5), [0, 1, 0, 1], ["train"] * 4)
    assert baselines.finetune_plan(long).batch_size == 16
    species = WindowSet("species", ["a", "b"], 64, np.full((4, 64), 5), [0, 1, 0, 1], ["train"] * 4)
    assert baselines.finetune_plan(species, strands="fwd").rc_prob == 0.5
    assert baselines.finetune_plan(species, strands="fwd").strands == "fwd"
    # a task can pool its own way (POOLING_BY_TASK, empty until a GPU call shows a pooling wins); --pooling
    # overrides; the rest pool the mean
    assert all(p in POOLINGS and p != "mean" for p in baselines.POOLING_BY_TASK.values())
    monkeypatch.setitem(baselines.POOLING_BY_TASK, "splice_donor", "meanmax")
    for name, pooling in baselines.POOLING_BY_TASK.items():
        assert pooling in POOLINGS and pooling != "mean" and name in baselines.ORIENTED
        site = WindowSet(name, ["a", "b"], 64, np.full((4, 64), 5), [0, 1, 0, 1], ["train"] * 4)
        assert baselines.finetune_plan(site).pooling == pooling
        argv = baselines.finetune_argv(site, tmp_path, tmp_path / "run", baselines.finetune_plan(site, pooling="last"))
        assert argv[argv.index("--pooling") + 1] == "last"
    assert baselines.finetune_plan(species).pooling == "mean"


def test_gpu_plan_pools_per_task_and_ablates_a_pooling(tmp_path, capsys, monkeypatch):
    """The gpu call's plan (dry run: nothing starts): each task's pooling, --pooling for all, and
    --ablate-pooling's second fine-tune of the --ablate tasks (same strands, stage finetune_<pooling>)."""
    from benchmarks.tasks.gpu import GpuPlan, run_gpu

    for name in ("splice_donor", "coding_umaydis"):
        ws = _separable(n=24, L=64)
        ws.name = name
        ws.save(tmp_path / "tasks")
    tasks = ["coding_umaydis", "splice_donor"]
    monkeypatch.setitem(baselines.POOLING_BY_TASK, "splice_donor", "meanmax")
    plan = GpuPlan(ablate=("splice_donor",), ablate_pooling="mean")
    assert run_gpu(tmp_path / "tasks", tmp_path / "out", tmp_path / "out" / "r.json", tmp_path / "work", tasks,
                   ["finetune"], plan, dry_run=True) == 0
    lines = {ln.split("] ", 1)[1].split(":")[0]: ln for ln in capsys.readouterr().out.splitlines() if "] " in ln}
    assert f"{baselines.task_pooling('splice_donor')} pooling" in lines["splice_donor"]
    assert "+ a --pooling mean run" in lines["splice_donor"] and "mean pooling" in lines["coding_umaydis"]
    assert run_gpu(tmp_path / "tasks", tmp_path / "out", tmp_path / "out" / "r.json", tmp_path / "work", tasks,
                   ["finetune"], GpuPlan(pooling="max"), dry_run=True) == 0
    assert capsys.readouterr().out.count("max pooling") == 2


def test_finetune_result_maps_the_runs_test_windows_to_ours(tmp_path):
    """The fine-tune stage's two halves without a run: its command line, and scoring a run directory.

    A real ``mamba-genome finetune`` subprocess runs in test_gpu_suite_fine_tunes_through_the_cli."""
    ws = _separable(n=24, L=64)
    d = ws.save(tmp_path)
    plan = baselines.finetune_plan(ws, max_time_s=60.5)
    argv = baselines.finetune_argv(ws, d, tmp_path / "run", plan, model_path="lm")
    assert argv[:3] == ["finetune", "--manifest", str(d / "manifest.tsv")] and argv[-2:] == ["--from", "lm"]
    assert argv[argv.index("--max-time") + 1] == "60s" and argv[argv.index("--pooling") + 1] == "mean"
    assert argv[argv.index("--strands") + 1] == "both" and argv[argv.index("--rc-prob") + 1] == "0"
    assert argv[argv.index("--test-windows") + 1] == "8"  # every test window of the larger class
    assert (d / "manifest.tsv").read_text().count("\n") == 7 and (d / "fasta" / "gc.test.fa").is_file()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"steps": 40, "best": {"step": 25, "val_acc": 0.9}}))
    test_idx = np.flatnonzero(ws.split == "test")
    rows = ["store\tcontig\tstart\tend\tlabel\tpredicted\tp_at\tp_gc"]
    for j in test_idx[::-1]:  # any order: matched by record name
        lab = ws.labels[ws.y[j]]
        p = 0.8 if ws.y[j] == 1 else 0.3
        rows.append(f"s\t{lab}_test_{j}\t0\t64\t{lab}\t{lab}\t{1 - p:.6f}\t{p:.6f}")
    (run / "test_predictions.tsv").write_text("\n".join(rows) + "\n")
    r = baselines.finetune_result(ws, run, plan, "runs/lm_order")
    assert r["n_test"] == 16 and r["accuracy"] == 1.0 and r["auroc"] == 1.0 and r["steps"] == 40
    assert r["val_accuracy"] == 0.9 and "best-on-val step 25" in r["method"] and "lm_order" in r["method"]
    (run / "test_predictions.tsv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(RuntimeError, match="1 of ours are missing"):
        baselines.finetune_result(ws, run, plan, "lm")


def test_cli_run_and_report(tmp_path, tiny_model, capsys):
    ws = _separable(n=30)
    ws.save(tmp_path / "tasks")
    res = tmp_path / "out" / "tasks.json"
    assert tasks_main(["run", "--tasks-dir", str(tmp_path / "tasks"), "--tasks", "order_short", "--stages", "kmer",
                       "--results", str(res)]) == 0
    got = json.loads(res.read_text())["tasks"]["order_short"]
    assert got["majority_rate"] == 0.5 and got["results"]["kmer"]["machine"]
    md = res.with_suffix(".md").read_text()
    assert "| order_short | 2 | 64 | 60/20/20 | auroc | 0.500 |" in md and "not run" in md
    # a model stage, here on CPU with a tiny model: merged next to the k-mer row
    assert tasks_main(["run", "--tasks-dir", str(tmp_path / "tasks"), "--tasks", "order_short", "--stages",
                       "probe", "--model", str(tiny_model), "--probe-layers", "1", "--results", str(res)]) == 0
    got = json.loads(res.read_text())["tasks"]["order_short"]["results"]
    assert set(got) == {"kmer", "probe"} and got["probe"]["chosen"]["layer"] == 1
    assert res.with_suffix(".md").read_text().count("not run") == 2  # the CNN and fine-tuning
    assert tasks_main(["report", "--results", str(res)]) == 0
    assert "| order_short |" in capsys.readouterr().out
    # merge: another file's stages join (and per stage replace) what is there
    other = json.loads(res.read_text())
    other["tasks"]["order_short"]["results"] = {"cnn": {**got["kmer"], "method": "cnn from elsewhere"}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert tasks_main(["merge", str(tmp_path / "other.json"), "--results", str(res)]) == 0
    merged = json.loads(res.read_text())["tasks"]["order_short"]["results"]
    assert set(merged) == {"kmer", "cnn", "probe"} and merged["cnn"]["method"] == "cnn from elsewhere"
    assert tasks_main(["run", "--tasks-dir", str(tmp_path / "tasks"), "--tasks", "nope", "--results", str(res)]) == 2
    assert tasks_main(["run", "--tasks-dir", str(tmp_path / "missing"), "--tasks", "coding", "--results", str(res)]) == 2


def test_bench_tasks_subcommand_passes_arguments():
    from click.testing import CliRunner

    from mamba_genome.cli import main

    r = CliRunner().invoke(main, ["bench", "tasks", "--", "run", "--help"])
    assert r.exit_code == 0, r.output
    assert "--stages" in r.output


# --------------------------------------------------- labels: many short records


def _records(path: Path, n: int, length: int, seed: int, gc: bool):
    rng = np.random.default_rng(seed)
    p = [0.1, 0.4, 0.4, 0.1] if gc else [0.4, 0.1, 0.1, 0.4]
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(f">r{i}\n{bytes(np.frombuffer(b'ACGT', np.uint8)[rng.choice(4, length, p=p)]).decode()}\n")
    return path


def test_short_records_are_held_out_whole(tmp_path):
    from mamba_genome.data.labels import build_task, parse_class_pairs

    a = _records(tmp_path / "a.fa", 40, 64, 0, False)
    b = _records(tmp_path / "b.fa", 30, 64, 1, True)
    sources = parse_class_pairs([f"a={a}", f"b={b}"])
    task = build_task(sources, val_fraction=0.1, test_fraction=0.2, store_dir=tmp_path / "st", progress=False)
    task.check_windows(64)  # the failure: tails of 64-bp records hold no 64-bp window
    for k, n in ((0, 40), (1, 30)):
        regs = [r for r in task.regions if r.label == k]
        assert len(regs) == n and all(r.start == 0 and r.end == 64 for r in regs)  # whole, one split each
        got = {s: sum(r.split == s for r in regs) for s in ("train", "val", "test")}
        assert got == {"train": n - round(0.1 * n) - round(0.2 * n), "val": round(0.1 * n), "test": round(0.2 * n)}
    assert "whole records" in task.methods["a"]
    again = build_task(sources, val_fraction=0.1, test_fraction=0.2, store_dir=tmp_path / "st", progress=False)
    assert again.regions == task.regions  # seeded
    other = build_task(sources, val_fraction=0.1, test_fraction=0.2, store_dir=tmp_path / "st", progress=False, seed=1)
    assert other.regions != task.regions


def test_few_long_records_keep_tail_split(tmp_path):
    from mamba_genome.data.labels import build_task, parse_class_pairs

    a = _records(tmp_path / "a.fa", 3, 2000, 0, False)
    b = _records(tmp_path / "b.fa", 3, 2000, 1, True)
    task = build_task(parse_class_pairs([f"a={a}", f"b={b}"]), store_dir=tmp_path / "st", progress=False)
    assert "tails" in task.methods["a"]
    assert {r.split for r in task.regions if r.contig == "r0" and r.label == 0} == {"train", "val", "test"}


def test_finetune_trains_on_short_records_at_their_length(tmp_path):
    from click.testing import CliRunner

    from mamba_genome.cli import main

    a = _records(tmp_path / "a.fa", 40, 64, 0, False)
    b = _records(tmp_path / "b.fa", 40, 64, 1, True)
    r = CliRunner().invoke(main, ["finetune", "--class", f"a={a}", "--class", f"b={b}", "--seq-len", "64",
                                  "--batch-size", "4", "--max-steps", "2", "--val-windows", "4", "--test-windows", "8",
                                  "--accelerator", "cpu", "--model-overrides", json.dumps({"d_model": 16, "n_layer": 1}),
                                  "-q", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n_test_windows"] == 8  # 4 whole test records per class


def test_debian_packages_stand_in_for_the_data_folder(tmp_path):
    """--data debian (or the default folder missing) links the Debian packages' genomes into the
    layout the tasks read; a missing package is a one-line error that names it."""
    from mamba_genome.errors import UserError

    root = tmp_path / "doc"
    for src in common.DEBIAN_GENOMES.values():
        (root / src).parent.mkdir(parents=True, exist_ok=True)
        (root / src).write_bytes(b"x")
    data = common.resolve_data("debian", tmp_path / "out", root=root)
    assert data == tmp_path / "out" / "_data"
    for rel, src in common.DEBIAN_GENOMES.items():
        assert (data / rel).resolve() == (root / src).resolve()
    assert common.resolve_data("debian", tmp_path / "out", root=root) == data      # again: links replaced
    assert common.resolve_data(tmp_path, tmp_path / "out", root=root) == tmp_path   # a folder given: itself
    (root / common.DEBIAN_GENOMES["umaydis/Umaydis.fa.gz"]).unlink()
    with pytest.raises(UserError, match="apt-get install ragout-examples maffilter-examples"):
        common.resolve_data("debian", tmp_path / "out2", root=root)
