"""score (per base): tracks match the API and one-pass logits, totals match evaluate, output formats agree."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mamba_genome.api import GenomeModel
from mamba_genome.cli import main
from mamba_genome.data.fasta import iter_fasta_records
from mamba_genome.data.tokenizer import encode, reverse_complement
from mamba_genome.errors import UserError
from mamba_genome.model.likelihood import entropy as entropy_of
from mamba_genome.model.likelihood import target_log_probs
from mamba_genome.workflows.evaluate import evaluate
from mamba_genome.workflows.score import score_file, score_tracks

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def fasta(tmp_path):
    """Three U. maydis records (1,200 bp each) plus the IUPAC file's records (N targets)."""
    p = tmp_path / "in.fa"
    p.write_text((DATA / "umaydis_3contigs.fa").read_text() + (DATA / "iupac.fa").read_text())
    return p


def _records(path):
    return [(name, seq.decode()) for name, seq in iter_fasta_records(path)]


def _one_pass(lm, seq: str):
    """(logp with NaN at 0 and at non-ACGT targets, entropy with NaN at 0) from one plain forward."""
    ids = torch.from_numpy(encode(seq)).long()[None]
    with torch.no_grad():
        logits = lm(ids[:, :-1])
        lp, keep = target_log_probs(logits, ids[:, 1:])
        ent = entropy_of(logits)
    logp = np.full(len(seq), np.nan, dtype=np.float64)
    logp[1:] = np.where(keep[0].numpy(), lp[0].numpy(), np.nan)
    e = np.full(len(seq), np.nan)
    e[1:] = ent[0].numpy()
    return logp, e


def test_tracks_equal_one_pass_and_rc(lm, fasta):
    recs = _records(fasta)
    recs = [(recs[0][0], recs[0][1][:300]), recs[3]]          # 300 bp of U. maydis; chrA with IUPAC codes
    gm = GenomeModel(lm)
    seqs = [encode(s) for _, s in recs]
    logp, ent, ll, bases = score_tracks(gm, seqs, entropy=True, precision="fp32", chunk_size=128)
    rlogp, rent, rll, _ = score_tracks(gm, seqs, entropy=True, rc_average=True, precision="fp32")
    for k, (_, s) in enumerate(recs):
        want, want_e = _one_pass(lm, s)
        np.testing.assert_allclose(logp[k], want, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(ent[k], want_e, atol=1e-5, equal_nan=True)
        assert ll[k] == pytest.approx(np.nansum(want), abs=1e-3)
        assert bases[k] == np.isfinite(want).sum()
        # the reverse strand, flipped to forward coordinates, averaged where both strands score a base
        rc, rc_e = _one_pass(lm, reverse_complement(s))
        rc, rc_e = rc[::-1], rc_e[::-1]
        both = np.nanmean(np.stack([want, rc]), 0)
        np.testing.assert_allclose(rlogp[k], both, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(rent[k], np.nanmean(np.stack([want_e, rc_e]), 0), atol=1e-5, equal_nan=True)
        assert rll[k] == pytest.approx((np.nansum(want) + np.nansum(rc)) / 2, abs=1e-3)


def test_totals_match_evaluate(model_dir, fasta, tmp_path):
    """Per-record totals of `score` == `evaluate` with one window per record (fp32, 1e-6 relative),
    including records with N (never scored)."""
    res = score_file(fasta, model_dir, tmp_path / "o.h5", device="cpu", precision="fp32", progress=False)
    ev = evaluate(model_dir, fasta, seq_len=4096, device="cpu", progress=False)
    by_rec = {r["record"]: r for r in ev["per_record"]}
    assert len(res.totals) == len(by_rec) == 4
    for t in res.totals:
        e = by_rec[t["id"]]
        assert t["bases"] == e["bases"]
        assert t["bits_per_base"] == pytest.approx(e["bits_per_base"], rel=1e-6)
        assert -t["log_likelihood"] == pytest.approx(e["bits_per_base"] * np.log(2) * e["bases"], rel=1e-6)


def test_bedgraph_loads_in_pandas_and_matches_other_outputs(model_dir, fasta, tmp_path):
    import h5py
    import pandas as pd
    import pyBigWig

    bed = tmp_path / "r.bed"
    recs = _records(fasta)
    bed.write_text(f"{recs[0][0]}\t100\t400\tregA\n{recs[1][0]}\t0\t50\tregB\n{recs[3][0]}\t5\t60\n")
    outs = {}
    for ext in ("bedgraph", "tsv", "h5", "bw"):
        r = CliRunner().invoke(main, ["score", str(fasta), "-m", str(model_dir), "--bed", str(bed), "--entropy",
                                      "-o", str(tmp_path / f"o.{ext}"), "--device", "cpu", "--precision", "fp32",
                                      "-q"])
        assert r.exit_code == 0, r.output
        outs[ext] = r.stdout
    assert len(set(outs.values())) == 1           # the same totals whatever the format
    totals = pd.read_csv(io.StringIO(outs["tsv"]), sep="\t")
    assert totals["id"].tolist() == ["regA", "regB", f"{recs[3][0]}:5-60"]
    bg = pd.read_csv(tmp_path / "o.bedgraph", sep="\t", header=None, skiprows=1,
                     names=["chrom", "start", "end", "value"])
    assert bg["chrom"].iloc[0] == recs[0][0] and (bg["end"] - bg["start"] == 1).all()
    per = pd.read_csv(tmp_path / "o.tsv", sep="\t")
    per = per.dropna(subset=["logp"])
    np.testing.assert_array_equal(bg["start"].to_numpy(), per["pos"].to_numpy())
    np.testing.assert_allclose(bg["value"].to_numpy(), per["logp"].to_numpy(), rtol=1e-5)
    # region sums in the bedGraph are the reported totals
    sums = bg.assign(rid=np.repeat(totals["id"].to_numpy(), totals["bases"].to_numpy())).groupby("rid", sort=False)
    np.testing.assert_allclose(sums["value"].sum().to_numpy(), totals["log_likelihood"].to_numpy(), rtol=1e-4)
    ebg = pd.read_csv(tmp_path / "o.entropy.bedgraph", sep="\t", header=None, skiprows=1)
    assert len(ebg) == sum(e - s - 1 for s, e in [(100, 400), (0, 50), (5, 60)])
    with h5py.File(tmp_path / "o.h5") as h:
        off = h["offsets"][:]
        assert list(h["start"][:]) == [100, 0, 5]
        lp = h["logp"][:]
        assert np.isnan(lp[off[:-1]]).all()
        np.testing.assert_allclose(lp[np.isfinite(lp)], bg["value"].to_numpy(), rtol=1e-5)
    bw = pyBigWig.open(str(tmp_path / "o.bw"))
    first = bg[bg["chrom"] == recs[0][0]]
    got = np.array(bw.values(recs[0][0], 101, 400))
    np.testing.assert_allclose(got, first["value"].to_numpy(), rtol=1e-5)
    bw.close()


def test_score_options_and_errors(model_dir, fasta, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["score", str(fasta), "-m", str(model_dir), "-o", str(tmp_path / "o.csv")])
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "unknown output type" in r.stderr
    r = runner.invoke(main, ["score", "-m", str(model_dir), "-o", str(tmp_path / "o.tsv")])
    assert r.exit_code == 1 and "give INPUT" in r.stderr
    r = runner.invoke(main, ["score", str(fasta), "-m", str(model_dir), "-o", str(tmp_path / "o.tsv"),
                             "--window", "64"])
    assert r.exit_code == 1 and "only apply with --vcf" in r.stderr
    with pytest.raises(UserError, match="no such BED"):
        score_file(fasta, model_dir, tmp_path / "o.tsv", bed=tmp_path / "missing.bed", progress=False)
    assert not list(tmp_path.glob(".o.*tmp*"))
