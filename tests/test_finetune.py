"""`mamba-genome finetune` end to end on CPU: run directory, metrics, --from, k-mer baseline, bad inputs."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import load_model, save_model
from mamba_genome.cli import main
from mamba_genome.model.classifier import MambaClassifier
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.train.classify_module import seq_len_for_epoch, warmup_cosine
from mamba_genome.workflows.finetune import FinetuneArgs
from mamba_genome.workflows.kmer_baseline import kmer_baseline, kmer_frequencies

DATA = Path(__file__).parent / "data"
TINY = {"d_model": 16, "n_layer": 1}
FAST = ["--seq-len", "64", "--batch-size", "4", "--max-steps", "4", "--steps-per-epoch", "2", "--val-windows", "2",
        "--test-windows", "4", "--accelerator", "cpu", "--model-overrides", json.dumps(TINY), "-q"]


@pytest.fixture(scope="module")
def fastas(tmp_path_factory):
    d = tmp_path_factory.mktemp("fa")
    for name in ("saureus_COL_8k.fa", "saureus_N315_8k.fa"):
        shutil.copy(DATA / name, d / name)
    return d


@pytest.fixture(scope="module")
def run(fastas):
    out = fastas / "run"
    r = CliRunner().invoke(main, ["finetune", "--class", f"COL={fastas / 'saureus_COL_8k.fa'}",
                                  "--class", f"N315={fastas / 'saureus_N315_8k.fa'}", "--out", str(out),
                                  "--baseline", "kmer", "--kmer-k", "3", *FAST])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    return out


def test_run_directory(run):
    for name in ("metrics.json", "labels.json", "confusion_matrix.tsv", "confusion_matrix.png", "curves.csv",
                 "curves.png", "split.json", "kmer_baseline.json", "test_predictions.tsv",
                 "best/config.json", "best/model.safetensors", "last/config.json", "last/model.safetensors"):
        assert (run / name).is_file(), name
    assert not list(run.parent.glob("run.tmp-*"))
    m = json.loads((run / "metrics.json").read_text())
    assert 0 <= m["test_accuracy"] <= 1 and 0 <= m["test_macro_f1"] <= 1
    assert set(m["per_class"]) == {"COL", "N315"}
    assert set(m["per_class"]["COL"]) == {"precision", "recall", "f1", "support"}
    assert m["per_class"]["COL"]["support"] == 4 and m["steps"] == 4
    assert 0 <= m["kmer_baseline"]["accuracy"] <= 1
    assert json.loads((run / "labels.json").read_text()) == ["COL", "N315"]
    cm = pd.read_csv(run / "confusion_matrix.tsv", sep="\t", index_col=0)
    assert list(cm.columns) == ["COL", "N315"] and cm.values.sum() == 8
    curves = pd.read_csv(run / "curves.csv")
    assert list(curves["step"]) == [2, 4] and (curves["seq_len"] == 64).all()
    split = json.loads((run / "split.json").read_text())
    assert len(split["test_windows"]) == 8 and split["labels"] == ["COL", "N315"]
    model, meta = load_model(run)
    assert isinstance(model, MambaClassifier) and meta["extra"]["labels"] == ["COL", "N315"]
    assert meta["extra"]["seq_len"] == 64 and model.pooling == "last"


def test_classify_with_finetuned_run(run, tmp_path):
    r = CliRunner().invoke(main, ["classify", str(DATA / "saureus_N315_8k.fa"), "--model", str(run)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(io.StringIO(r.stdout), sep="\t")
    assert df.loc[0, "length"] == 8000 and df.loc[0, "predicted"] in ("COL", "N315")
    assert abs(df.loc[0, "p_COL"] + df.loc[0, "p_N315"] - 1) < 1e-5


def test_from_pretrained_lm_and_rerun_replaces(fastas, tmp_path):
    torch.manual_seed(0)
    cfg = MambaConfig.from_preset("tiny", **TINY)
    lm = MambaLM(cfg)
    save_model(lm, tmp_path / "pre" / "best")
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"label\tfasta\nCOL\t{fastas / 'saureus_COL_8k.fa'}\nN315\t{fastas / 'saureus_N315_8k.fa'}\n")
    out = tmp_path / "ft"
    args = ["finetune", "--manifest", str(manifest), "--from", str(tmp_path / "pre"), "--out", str(out),
            "--freeze-backbone", "--pooling", "last", *FAST]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    model, meta = load_model(out)
    # Frozen backbone: the classifier's backbone still equals the pretrained LM.
    for k, v in lm.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert "pretrained lm" in meta["extra"]["source"] and model.pooling == "last"
    r = CliRunner().invoke(main, args)  # re-running into the same run directory is refused...
    assert r.exit_code == 1 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    r = CliRunner().invoke(main, [*args, "--force"])  # ...unless --force replaces it
    assert r.exit_code == 0, r.output


def test_bad_inputs(fastas, tmp_path):
    col, n315 = fastas / "saureus_COL_8k.fa", fastas / "saureus_N315_8k.fa"
    other = tmp_path / "x"
    other.mkdir()
    (other / "file.txt").write_text("not a run")
    cases = [
        (["--class", f"COL={col}", "--class", f"N315={tmp_path / 'absent.fa'}"], "no such file"),
        (["--class", f"COL={col}", "--class", f"N315={n315}", "--seq-len", "5000"], "no usable val window of 5,000 bp"),
        (["--class", f"COL={col}"], "at least 2 classes"),
        ([], "either --class"),
        (["--class", f"COL={col}", "--class", f"N315={n315}", "--lr", "0"], "--lr"),
        (["--class", f"COL={col}", "--class", f"N315={n315}", "--out", str(other)], "exists and is not empty"),
        (["--class", f"COL={col}", "--class", f"N315={n315}", "--from", str(tmp_path)], "not a model directory"),
        (["--class", f"COL={col}", "--class", f"N315={n315}", "--model-overrides", "[1]"], "JSON object"),
        (["--class", f"COL={col}", "--class", f"N315={DATA / 'not_fasta.fq'}"], "FASTA"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(main, ["finetune", *args, "-q", "--accelerator", "cpu"])
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.startswith("error: ") and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("field, value, flag", [
    ("seq_len", 0, "--seq-len"), ("pooling", "sum", "--pooling"), ("val_fraction", 1.0, "--val-fraction"),
    ("warmup_steps", 300, "--warmup-steps"), ("baseline", "cnn", "--baseline"), ("preset", "huge", "--preset"),
    ("patience", 0, "--patience"), ("rc_prob", 1.5, "--rc-prob"),
])
def test_args_validation_names_the_flag(field, value, flag):
    with pytest.raises(Exception, match=flag):
        FinetuneArgs(classes=("a=x", "b=y"), **{field: value})


def test_schedules():
    lrs = [warmup_cosine(s, warmup_steps=10, max_steps=110, lr=1e-3, min_lr=1e-6) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6)) and lrs[110] == pytest.approx(1e-6)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert [seq_len_for_epoch(e, 1 << 17) for e in range(5)] == [1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 17]
    assert seq_len_for_epoch(0, 1024) == 1024 and seq_len_for_epoch(0, 1 << 17, warmup=False) == 1 << 17
    from mamba_genome.train.schedule import seq_len_lengths

    # one warmup: fine-tuning's epochs walk pretraining's stage lengths (halvings of the target)
    for target in (1 << 17, 3 << 14, 100_000, 1000):
        lengths = seq_len_lengths(target, 1 << 14)
        assert [seq_len_for_epoch(e, target) for e in range(len(lengths) + 1)] == lengths + [target]


def test_kmer_baseline_separates_composition():
    rng = np.random.default_rng(0)
    at = [rng.choice([5, 8], 200) for _ in range(40)] + [rng.choice([5, 6, 7, 8], 200, p=[.1, .4, .4, .1]) for _ in range(40)]
    y = [0] * 40 + [1] * 40
    res = kmer_baseline(at[::2], y[::2], at[1::2], y[1::2], k=3, num_classes=2)
    assert res["accuracy"] == 1.0 and res["macro_f1"] == 1.0 and res["n_train"] == 40
    f = kmer_frequencies(np.array([5, 6, 9, 7, 8, 5]), k=2)  # AC, GT, TA; the N breaks CN and NG
    assert f.sum() == pytest.approx(1.0) and np.count_nonzero(f) == 3


def test_max_time_takes_durations_and_rejects_nonsense(tmp_path):
    args = ["finetune", "--class", f"a={DATA / 'saureus_COL_8k.fa'}", "--class", f"b={DATA / 'saureus_N315_8k.fa'}",
            "--out", str(tmp_path / "run"), "--max-time"]
    res = CliRunner().invoke(main, [*args, "5x"])
    assert res.exit_code == 1 and "--max-time" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_patience_stops_early_and_rc_prob_reaches_the_windows(fastas, tmp_path):
    """--patience 1 with a learning rate far too high (seeded): training stops at the first validation that
    is not a new best, long before --max-steps, and says so; the flags reach the run's arguments."""
    out = tmp_path / "ft"
    fast = [a for a in FAST]
    fast[fast.index("--max-steps") + 1] = "40"
    r = CliRunner().invoke(main, ["finetune", "--class", f"COL={fastas / 'saureus_COL_8k.fa'}",
                                  "--class", f"N315={fastas / 'saureus_N315_8k.fa'}", "--out", str(out),
                                  "--patience", "1", "--lr", "0.5", "--rc-prob", "0", *fast])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    curves = pd.read_csv(out / "curves.csv", sep=None, engine="python")
    assert m["stopped_early"] is True and m["steps"] < 40, m["steps"]
    assert m["best"]["step"] < m["steps"] and m["steps"] == int(curves["step"].iloc[-1])
    assert m["args"]["rc_prob"] == 0 and m["args"]["patience"] == 1


def test_validations_since_best_counts_from_the_curves():
    from mamba_genome.train.classify_module import ClassifyModule

    mod = ClassifyModule.__new__(ClassifyModule)
    mod.curves = [{"step": s} for s in (2, 4, 6, 8)]
    mod.best = None
    assert mod.validations_since_best() == 0
    mod.best = {"step": 4}
    assert mod.validations_since_best() == 2
    mod.best = {"step": 8}
    assert mod.validations_since_best() == 0
