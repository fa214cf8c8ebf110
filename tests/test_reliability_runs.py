"""Issue 16, part C: run directories, locks, signals, exact resume, progress off a terminal.

Each test is one item of the issue that failed on main (08a32b0): the run-
directory policy (:mod:`mamba_genome.train.rundir`), SIGTERM/SIGINT during
``pretrain``/``finetune``, ``--resume`` matching an uninterrupted run step for
step, paths in ``args.json``, damaged ``last.ckpt`` files, ``kill -9`` and two
runs on one ``--out``, and plain progress lines in logs. Runs are tiny
(d_model 16, one layer, 32-token windows, a few steps) and in-process where
possible; one test starts a subprocess (kill -9 and a concurrent run).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mamba_genome.cli import main
from mamba_genome.train.rundir import LOCK_NAME, MARKER, RunDir, lock_holder

DATA = Path(__file__).parent / "data"
TINY = json.dumps({"d_model": 16, "n_layer": 1})
FAST = ["--seq-len", "32", "--batch-size", "2", "--val-windows", "4", "--accelerator", "cpu",
        "--model-overrides", TINY]
FT_TINY = json.dumps({"d_model": 16, "n_layer": 1})
FT_FAST = ["--seq-len", "64", "--batch-size", "4", "--steps-per-epoch", "2", "--val-windows", "2",
           "--test-windows", "4", "--accelerator", "cpu", "--model-overrides", FT_TINY, "-q"]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    d = tmp_path_factory.mktemp("fa")
    shutil.copy(DATA / "ecoli_MG1655_3kb.fa", d / "ecoli.fa")
    return d / "ecoli.fa"


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    for name in ("saureus_COL_8k.fa", "saureus_N315_8k.fa"):
        shutil.copy(DATA / name, d / name)
    return ["--class", f"COL={d / 'saureus_COL_8k.fa'}", "--class", f"N315={d / 'saureus_N315_8k.fa'}"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res, *needles):
    assert res.exit_code != 0, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def signal_at_step(monkeypatch, module_cls, step: int, signum: int):
    """Send ``signum`` to this process during the training step that ends at global step ``step``."""
    orig = module_cls.training_step
    fired = []

    def training_step(self, batch, batch_idx):
        if not fired and self.global_step == step - 1:
            fired.append(True)
            os.kill(os.getpid(), signum)
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(module_cls, "training_step", training_step)
    return fired


def train_losses(csv_path: Path) -> dict[int, float]:
    with open(csv_path) as fh:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")}


# --------------------------------------------------------------- item 9: exact resume


RESUME_RUN = ["--seq-len", 64, "--seq-warmup-start", 32, "--batch-size", 2, "--val-windows", 2, "--max-steps", 8,
              "--val-every", 4, "--accelerator", "cpu", "--model-overrides", TINY, "-q"]


@pytest.fixture(scope="module")
def straight_run(fasta, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    res = invoke("pretrain", "--fasta", fasta, *RESUME_RUN, "--out", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("step,signum", [
    pytest.param(3, signal.SIGTERM, id="SIGTERM-mid-epoch"),
    pytest.param(1, signal.SIGINT, id="SIGINT-epoch-boundary"),
])
def test_resume_matches_an_uninterrupted_run(fasta, straight_run, tmp_path, monkeypatch, step, signum):
    """8 steps straight vs a signal at ``step`` + --resume: the same train loss at every step and the
    same final weights (CPU, fp32). The windows are 32 bp for one step, then 64 bp (two epochs)."""
    from mamba_genome.train.lm_module import LMModule

    broken = tmp_path / "broken"
    fired = signal_at_step(monkeypatch, LMModule, step, signum)
    res = invoke("pretrain", "--fasta", fasta, *RESUME_RUN, "--out", broken)
    assert fired and res.exit_code == 128 + signum, res.output
    assert torch.load(broken / "last.ckpt", weights_only=True)["global_step"] == step
    monkeypatch.undo()
    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))
    res = invoke("pretrain", "--out", broken, "--resume", "--accelerator", "cpu", "-q")
    assert res.exit_code == 0, res.output

    want = train_losses(straight_run / "logs" / "v0" / "metrics.csv")
    got = {**train_losses(broken / "logs" / "v0" / "metrics.csv"), **train_losses(broken / "logs" / "v1" / "metrics.csv")}
    assert sorted(got) == sorted(want) == list(range(8))
    for s in want:
        assert got[s] == pytest.approx(want[s], rel=1e-6, abs=1e-7), s
    a = torch.load(straight_run / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(broken / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=k)
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (straight_run, broken))
    assert m1["steps"] == m2["steps"] == 8 and m1["tokens_seen"] == m2["tokens_seen"]
    assert m2["val_loss"] == pytest.approx(m1["val_loss"], rel=1e-6)
