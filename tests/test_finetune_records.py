"""Fine-tuning on many short records (genes, reads, 512-bp windows): each record is one item, trained and
scored whole at its own length, padded to the batch width, pooled over its real bases only."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mamba_genome.cli import main
from mamba_genome.data.tokenizer import PAD
from mamba_genome.model.classifier import POOLINGS, MambaClassifier
from mamba_genome.model.config import MambaConfig


def _classifier(pooling, strands="fwd"):
    """A tiny classifier; an ``attention`` one gets a random (not the initial zero) position score."""
    torch.manual_seed(0)
    clf = MambaClassifier(MambaConfig.from_preset("tiny", d_model=16, n_layer=2), 3, pooling, strands=strands).eval()
    if pooling == "attention":
        torch.nn.init.normal_(clf.pool_score.weight, std=1.0)
    return clf


@pytest.mark.parametrize("strands", ["fwd", "both"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_over_real_tokens_ignores_padding(pooling, strands):
    clf = _classifier(pooling, strands)
    a, b = torch.randint(5, 9, (1, 30)), torch.randint(5, 9, (1, 17))
    batch = torch.full((2, 30), PAD, dtype=torch.long)
    batch[0], batch[1, :17] = a[0], b[0]
    with torch.no_grad():
        got = clf(batch, torch.tensor([30, 17]))
        torch.testing.assert_close(got[0], clf(a)[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], clf(b)[0], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(clf(batch)[1], got[1])   # without lengths the padding is pooled too


def test_reverse_complement_rows_keeps_padding_at_the_end():
    from mamba_genome.data.tokenizer import encode, reverse_complement_tokens
    from mamba_genome.model.classifier import reverse_complement_rows

    a, b = torch.from_numpy(encode("ACGTTNGA").astype("int64")), torch.from_numpy(encode("AACG").astype("int64"))
    batch = torch.full((2, 8), PAD, dtype=torch.long)
    batch[0], batch[1, :4] = a, b
    rc = reverse_complement_rows(batch, torch.tensor([8, 4]))
    assert rc[0].tolist() == reverse_complement_tokens(a).tolist()
    assert rc[1, :4].tolist() == reverse_complement_tokens(b).tolist() and rc[1, 4:].tolist() == [PAD] * 4
    assert reverse_complement_rows(batch)[1].tolist() == reverse_complement_tokens(batch[1]).tolist()


def test_poolings_by_hand():
    """max: per-channel max over the real positions; attention: softmax(score) weights over them, uniform
    (= mean) at initialisation; meanmax: [mean, max]; padding never reaches any of them."""
    h = torch.randn(2, 7, 16)
    h[1, 4:] = 1e3   # padding rows that would win a max or shift a mean
    lens = torch.tensor([7, 4])
    mean = torch.stack([h[0].mean(0), h[1, :4].mean(0)])
    mx = torch.stack([h[0].amax(0), h[1, :4].amax(0)])
    torch.testing.assert_close(_classifier("max").pool(h, lens), mx)
    torch.testing.assert_close(_classifier("meanmax").pool(h, lens), torch.cat([mean, mx], 1))
    torch.manual_seed(0)
    clf = MambaClassifier(MambaConfig.from_preset("tiny", d_model=16, n_layer=2), 3, "attention")
    assert clf.head.in_features == 16 and not clf.pool_score.weight.any()
    torch.testing.assert_close(clf.pool(h, lens), mean)   # zero score: the mean
    clf = _classifier("attention")
    w = torch.softmax(clf.pool_score(h[1, :4]).squeeze(-1), 0)
    torch.testing.assert_close(clf.pool(h, lens)[1], (w[:, None] * h[1, :4]).sum(0))
    assert _classifier("meanmax", "both").head.in_features == 64
    assert "pool_score" not in dict(_classifier("mean").named_parameters())   # old checkpoints' keys unchanged


@pytest.mark.parametrize("pooling", POOLINGS)
def test_class_log_probs_equal_forward_and_survive_save_load(pooling, tmp_path):
    """MambaClassifier.class_log_probs (the path of classify, the API and finetune's test pass; streamed)
    gives each record's own forward log-softmax, records of different lengths batched together; a saved classifier
    reloads with its pooling (init_kwargs) and weights, and gives the same numbers."""
    from mamba_genome.checkpoint import load_model, save_model

    clf = _classifier(pooling, "both")
    torch.nn.init.normal_(clf.head.weight, std=1.0)
    recs = [torch.randint(5, 9, (n,)).numpy().astype("uint8") for n in (30, 17, 25)]
    lp = clf.class_log_probs(recs, batch_size=2, chunk_size=7)   # streamed in chunks across the records
    for r, got in zip(recs, lp):
        with torch.no_grad():
            want = torch.log_softmax(clf(torch.from_numpy(r).long()[None]), -1)[0].double().numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    save_model(clf, tmp_path / "m", init_kwargs=clf.init_kwargs)
    back, meta = load_model(tmp_path / "m")
    assert back.pooling == pooling and meta["init_kwargs"]["pooling"] == pooling
    np.testing.assert_allclose(back.eval().class_log_probs(recs, batch_size=2, chunk_size=7), lp, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_both_strands_classifier_sees_the_reverse_complement(pooling):
    """strands="both": the head reads [pool(fwd pass), pool(RC pass)]; swapping a window for its reverse
    complement swaps the two halves (padded records: test_pooling_over_real_tokens_ignores_padding)."""
    from mamba_genome.data.tokenizer import reverse_complement_tokens

    torch.manual_seed(0)
    cfg = MambaConfig.from_preset("tiny", d_model=16, n_layer=2)
    clf = MambaClassifier(cfg, 3, pooling, strands="both").eval()
    assert clf.head.in_features == 32 * (2 if pooling == "meanmax" else 1) and clf.init_kwargs["strands"] == "both"
    a = torch.randint(5, 9, (1, 30))
    with torch.no_grad():
        fwd = clf.pool(clf.backbone.backbone(a))
        rc = clf.pool(clf.backbone.backbone(reverse_complement_tokens(a)))
        torch.testing.assert_close(clf(a), clf.head(torch.cat([fwd, rc], 1)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(clf(reverse_complement_tokens(a)), clf.head(torch.cat([rc, fwd], 1)),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="strands"):
        MambaClassifier(cfg, 3, pooling, strands="rc")


@pytest.fixture(scope="module")
def record_fastas(tmp_path_factory):
    """Two classes of 40 records each, 500 bp (shorter than --seq-len 512) or 512 bp, of different composition."""
    d = tmp_path_factory.mktemp("records")
    rng = random.Random(0)
    for name, alphabet in (("cds", "GGCCAT"), ("ig", "AATTGC")):
        with open(d / f"{name}.fa", "w") as fh:
            for i in range(40):
                n = 500 if i % 2 else 512
                fh.write(f">{name}{i}\n{''.join(rng.choice(alphabet) for _ in range(n))}\n")
    return d


def test_finetune_on_short_records(record_fastas, tmp_path):
    """Once refused with "class 'cds' has no usable train window of 512 bp": 500-bp records at --seq-len 512
    train (2 micro-batches of 2 per step) and every test record is scored whole."""
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "finetune", "--class", f"cds={record_fastas / 'cds.fa'}", "--class", f"ig={record_fastas / 'ig.fa'}",
        "--seq-len", "512", "--max-steps", "4", "--batch-size", "4", "--micro-batch-size", "2", "--val-windows", "4", "--test-windows", "50",
        "--accelerator", "cpu", "--model-overrides", json.dumps({"d_model": 16, "n_layer": 1}), "--out", str(out),
        "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert all("whole records" in v for v in m["split"].values())
    assert (m["micro_batch"], m["accumulate"], m["memory"]) == (2, 2, "auto")   # the expert flag over the planner
    rows = (out / "test_predictions.tsv").read_text().splitlines()[1:]
    spans = [(r.split("\t")[1], int(r.split("\t")[3]) - int(r.split("\t")[2])) for r in rows]
    # every held-out record is scored whole, at its own length; none is in train or val
    assert {n for _, n in spans} == {500, 512} and len(spans) == m["n_test_windows"] == 8
    split = json.loads((out / "split.json").read_text())
    train = {r["contig"] for r in split["regions"] if r["split"] == "train"}
    assert not train & {c for c, _ in spans}


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_finetune_both_strands_saves_and_classifies_the_same(record_fastas, tmp_path, pooling):
    """--strands both and --pooling are kept in the model's init_kwargs; classify on a test record gives the
    run's own test probability for it (the RC pass covers the record's real bases, not the padding)."""
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "finetune", "--class", f"cds={record_fastas / 'cds.fa'}", "--class", f"ig={record_fastas / 'ig.fa'}",
        "--seq-len", "512", "--max-steps", "2", "--batch-size", "2", "--val-windows", "2", "--test-windows", "4",
        "--strands", "both", "--pooling", pooling, "--rc-prob", "0", "--accelerator", "cpu",
        "--model-overrides", json.dumps({"d_model": 16, "n_layer": 1}), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["init_kwargs"]["strands"] == "both" and cfg["init_kwargs"]["pooling"] == pooling
    assert json.loads((out / "metrics.json").read_text())["args"]["rc_prob"] == 0
    header, *rows = [r.split("\t") for r in (out / "test_predictions.tsv").read_text().splitlines()]
    short = next(r for r in rows if int(r[3]) - int(r[2]) == 500)    # a padded record
    name, p_cds = short[1], float(short[header.index("p_cds")])
    fasta = record_fastas / ("cds.fa" if name.startswith("cds") else "ig.fa")
    seqs = dict(zip(*[iter(fasta.read_text().split())] * 2))
    (tmp_path / "one.fa").write_text(f">{name}\n{seqs['>' + name]}\n")
    got = CliRunner().invoke(main, ["classify", str(tmp_path / "one.fa"), "--model", str(out)])
    assert got.exit_code == 0, got.output
    head, line = got.stdout.strip().splitlines()[:2]
    assert abs(float(line.split("\t")[head.split("\t").index("p_cds")]) - p_cds) < 1e-4
    bad = CliRunner().invoke(main, ["finetune", "--class", "a=x.fa", "--class", "b=y.fa", "--strands", "rc"])
    assert bad.exit_code != 0 and "strands" in bad.output
