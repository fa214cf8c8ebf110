"""`pretrain` and `finetune` with `--devices 2 --strategy ddp` through the training engine: two CPU
processes (gloo), launched the way a user launches them (Lightning re-runs the command line for rank 1).

One run of each, a few steps: both ranks train, rank 0 alone writes the run directory, and the finetune
starts from the pretrained run (finetune has no --strategy: Lightning's choice for several devices, DDP). Subprocesses (not CliRunner): DDP's launcher needs a real command line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TINY = json.dumps({"d_model": 16, "n_layer": 1})
DDP = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--model-overrides", TINY]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "mamba_genome", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(sys.platform == "win32", reason="gloo DDP launcher: POSIX")
def test_pretrain_then_finetune_on_two_cpu_processes(tmp_path):
    fa = tmp_path / "ecoli.fa"
    shutil.copy(DATA / "ecoli_MG1655_3kb.fa", fa)
    lm = tmp_path / "lm"
    r = _cli(["pretrain", "--fasta", str(fa), "--seq-len", "32", "--batch-size", "4", "--val-windows", "4",
              "--max-steps", "3", "-q", "--out", str(lm), *DDP], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((lm / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["steps"] == 3
    # the global batch of 4 is split over the two ranks: 3 steps x 4 windows x 32 tokens in all
    assert metrics["tokens_seen"] == 3 * 4 * 32
    assert (lm / "best" / "config.json").is_file() and (lm / "last.ckpt").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("lm") and p != lm]   # no rank-1 twin

    ft = tmp_path / "ft"
    r = _cli(["finetune", "--class", f"COL={DATA / 'saureus_COL_8k.fa'}", "--class", f"N315={DATA / 'saureus_N315_8k.fa'}",
              "--from", str(lm / "best"), "--seq-len", "64", "--batch-size", "4", "--max-steps", "3",
              "--steps-per-epoch", "3", "--val-windows", "2", "--test-windows", "4", "-q", "--out", str(ft), *DDP[:4]],
             tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    fm = json.loads((ft / "metrics.json").read_text())
    assert fm["steps"] == 3 and 0.0 <= fm["test_accuracy"] <= 1.0
    assert (ft / "best" / "config.json").is_file() and (ft / "test_predictions.tsv").is_file()
