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
    # item 8: a checkpoint of this step, one note saying how to resume, exit 128 + signal (143 / 130)
    assert fired and res.exit_code == 128 + signum, res.output
    name = signal.Signals(signum).name
    assert res.stderr.strip().splitlines()[-1] == (
        f"interrupted by {name} at step {step}; checkpoint saved to {broken / 'last.ckpt'}; "
        f"resume with: mamba-genome pretrain --out {broken} --resume")
    assert torch.load(broken / "last.ckpt", weights_only=True)["global_step"] == step
    assert not (broken / "metrics.json").exists() and lock_holder(broken) is None
    # our handlers are gone after the run (pytest's own SIGINT handler is back)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert getattr(signal.getsignal(signal.SIGINT), "__self__", None).__class__.__name__ != "GracefulStop"
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


def test_finetune_sigterm_and_exact_resume(classes, tmp_path, monkeypatch):
    """Items 8 + 9 for finetune: SIGTERM at step 1 -> last.ckpt of step 1, exit 143, no metrics.json;
    --resume gives the same curves and weights as an uninterrupted run."""
    from mamba_genome.train.classify_module import ClassifyModule

    straight, broken = tmp_path / "straight", tmp_path / "broken"
    res = invoke("finetune", *classes, *FT_FAST, "--max-steps", 4, "--out", straight)
    assert res.exit_code == 0, res.output
    signal_at_step(monkeypatch, ClassifyModule, 1, signal.SIGTERM)
    res = invoke("finetune", *classes, *FT_FAST, "--max-steps", 4, "--out", broken)
    assert res.exit_code == 143, res.output
    assert res.stderr.strip().splitlines()[-1].startswith("interrupted by SIGTERM at step 1; checkpoint saved to ")
    assert torch.load(broken / "last.ckpt", weights_only=True)["global_step"] == 1
    assert not (broken / "metrics.json").exists()
    monkeypatch.undo()
    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))
    res = invoke("finetune", "--out", broken, "--resume", "-q")
    assert res.exit_code == 0, res.output
    import pandas as pd
    from safetensors.torch import load_file

    a, b = pd.read_csv(straight / "curves.csv"), pd.read_csv(broken / "curves.csv")
    assert list(a["step"]) == list(b["step"]) == [2, 4]
    for col in ("train_loss", "val_loss", "val_acc", "lr"):
        assert b[col].tolist() == pytest.approx(a[col].tolist(), rel=1e-6), col
    wa, wb = (load_file(str(d / "last" / "model.safetensors")) for d in (straight, broken))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7, msg=k)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, broken))
    assert ma["test_accuracy"] == mb["test_accuracy"] and mb["steps"] == 4


# --------------------------------------------------------------- items 2, 4, 6, 11: the run-directory policy


def make_pretrain_run(path: Path) -> Path:
    """A run directory as pretrain leaves it (marker + its files), without training."""
    from mamba_genome.workflows.pretrain import RUN_FILES

    rd = RunDir(path, "pretrain", RUN_FILES)
    rd.prepare()
    rd.release()
    (path / "args.json").write_text('{"args": {}}')
    (path / "last.ckpt").write_bytes(b"ckpt")
    (path / "logs").mkdir()
    (path / "logs" / "metrics.csv").write_text("step\n")
    return path


def test_finetune_refuses_a_pretrain_run_and_force_keeps_foreign_files(classes, tmp_path):
    """Item 2: finetune --out on a pretraining run is refused without --force; with --force it replaces
    only what a run of ours wrote."""
    run = make_pretrain_run(tmp_path / "pre")
    res = invoke("finetune", *classes, *FT_FAST, "--max-steps", 2, "--out", run)
    one_error_line(res, "not empty", "--force")
    assert (run / "args.json").is_file() and (run / "last.ckpt").read_bytes() == b"ckpt"
    (run / "my_notes.txt").write_text("keep me")
    res = invoke("finetune", *classes, *FT_FAST, "--max-steps", 2, "--out", run, "--force")
    assert res.exit_code == 0, res.output
    assert (run / "my_notes.txt").read_text() == "keep me"
    # the pretraining run's logs went; these are the finetune run's own (the same Trainer assembly)
    assert not (run / "logs" / "metrics.csv").exists() and (run / "logs" / "v0" / "metrics.csv").is_file()
    assert (run / "metrics.json").is_file() and json.loads((run / MARKER).read_text())["command"] == "finetune"


def test_force_never_deletes_a_foreign_directory(fasta, tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    res = invoke("pretrain", "--fasta", fasta, *FAST, "--max-steps", 2, "--out", foreign, "--force")
    one_error_line(res, "not written by mamba-genome", "choose another --out")
    assert [p.name for p in foreign.iterdir()] == ["chapter1.tex"]


def test_out_inside_an_input_is_refused(fasta, tmp_path):
    """Item 4: --out may not be, or be inside, the --data store or the --from model directory."""
    store = tmp_path / "g.mgstore"
    assert invoke("ingest", fasta, "-o", store).exit_code == 0
    before = sorted(p.name for p in store.iterdir())
    for out in (store, store / "run"):
        res = invoke("pretrain", "--data", store, *FAST, "--max-steps", 2, "--out", out, "--force")
        one_error_line(res, "the input --data", "outside")
    assert sorted(p.name for p in store.iterdir()) == before
    model = make_pretrain_run(tmp_path / "pre")
    res = invoke("finetune", "--class", f"a={fasta}", "--class", f"b={fasta}", "--from", model,
                 "--out", model / "ft", "-q")
    one_error_line(res, "the input --from")
    # the FASTA's own directory is fine as a parent of --out
    RunDir(fasta.parent / "run-beside-fasta", "pretrain", ()).check(inputs={"--data": None})


def test_out_that_cannot_be_a_directory(classes, tmp_path):
    """Item 11: --out under a file or under /proc is one error line."""
    f = tmp_path / "file.txt"
    f.write_text("x")
    one_error_line(invoke("finetune", *classes, *FT_FAST, "--out", f / "run"), "is a file")
    one_error_line(invoke("finetune", *classes, *FT_FAST, "--out", f), "not a directory")
    one_error_line(invoke("finetune", *classes, *FT_FAST, "--out", "/proc/mamba-genome-test/run"), "--out")


def test_lock_names_the_holder_and_other_ranks_skip_it(fasta, tmp_path, monkeypatch):
    """Item 6 (in-process): a live run's lock refuses a second run, even with --force, naming the PID."""
    from mamba_genome.workflows import pretrain as wf

    run = make_pretrain_run(tmp_path / "run")
    holder = RunDir(run, "pretrain", wf.RUN_FILES)
    holder.acquire()
    try:
        for extra in ([], ["--force"], ["--resume"]):
            res = invoke("pretrain", "--fasta", fasta, *FAST, "--max-steps", 2, "--out", run, *extra)
            one_error_line(res, f"PID {os.getpid()}", "in use")
        assert (run / "last.ckpt").read_bytes() == b"ckpt"
        assert lock_holder(run) == os.getpid()
        monkeypatch.setenv("LOCAL_RANK", "1")  # DDP: only rank 0 takes (and checks) the lock
        monkeypatch.delenv(wf.RUN_DIR_ENV, raising=False)
        assert wf._prepare_run_dir(wf.PretrainArgs(out=str(run), force=True), create=True) == run
    finally:
        holder.release()
    assert lock_holder(run) is None and (run / LOCK_NAME).is_file()  # a stale lock file blocks nothing


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_one_run_dir_policy_for_both_commands_and_their_ranks(command, tmp_path, monkeypatch):
    """Both commands go through train/rundir.py: no --out -> runs/<command>-<timestamp>; rank 0 checks,
    locks and publishes the directory; the ranks Lightning re-launches (same command line, no --out) take
    that directory as it is, without checking or locking it; torchrun-started ranks need --out."""
    import re

    from mamba_genome.errors import UserError
    from mamba_genome.train import rundir as rd_mod
    from mamba_genome.workflows import finetune as ft, pretrain as pt

    files = (pt if command == "pretrain" else ft).RUN_FILES
    for k in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS", rd_mod.RUN_DIR_ENV):
        monkeypatch.delenv(k, raising=False)
    assert re.fullmatch(rf"runs/{command}-\d{{8}}-\d{{6}}", str(rd_mod.resolve_run_dir(None, command)))
    run = rd_mod.resolve_run_dir(str(tmp_path / "run"), command)
    rank0 = RunDir(run, command, files)
    rank0.check()
    rank0.prepare()
    (run / "args.json").write_text("{}")
    assert os.environ[rd_mod.RUN_DIR_ENV] == str(run.resolve()) and lock_holder(run) == os.getpid()
    with pytest.raises(UserError, match=f"in use by a running mamba-genome run \\(PID {os.getpid()}\\)"):
        RunDir(run, command, files).check(force=True)                     # a second rank-0 run is refused
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    got = rd_mod.resolve_run_dir(None, command)                           # no --out: rank 0's directory
    assert got.resolve() == run.resolve()
    other = RunDir(got, command, files)
    other.check(force=True)                                               # not re-checked, not cleared
    assert other.prepare(force=True) == got and not other.locked
    assert (run / "args.json").read_text() == "{}" and lock_holder(run) == os.getpid()
    rank0.release()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv(rd_mod.RUN_DIR_ENV)
    with pytest.raises(UserError, match="give --out"):
        rd_mod.resolve_run_dir(None, command)


def test_kill9_then_resume_and_a_concurrent_run_is_refused(fasta, tmp_path):
    """Items 6 + kill -9: while a pretrain subprocess runs, a second run on its --out is refused naming
    its PID; after kill -9 (lock file left behind) --resume finishes and the model loads."""
    from mamba_genome.checkpoint import load_model

    out = tmp_path / "run"
    env = {**os.environ, "MAMBA_GENOME_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "mamba_genome", "pretrain", "--fasta", str(fasta), *map(str, FAST),
                             "--max-steps", "100000", "--val-every", "2", "--out", str(out), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.ckpt").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        res = invoke("pretrain", "--fasta", fasta, *FAST, "--max-steps", 2, "--out", out, "--force")
        one_error_line(res, f"PID {proc.pid}")
        assert (out / "last.ckpt").is_file()
    finally:
        proc.kill()  # SIGKILL: no handler runs, the OS drops the lock
        proc.wait(30)
    assert (out / LOCK_NAME).is_file() and lock_holder(out) is None
    step = torch.load(out / "last.ckpt", weights_only=True)["global_step"]
    res = invoke("pretrain", "--out", out, "--resume", "--max-steps", step + 2, "--accelerator", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == step + 2
    model, _ = load_model(out / "last")
    assert model.config.d_model == 16


# --------------------------------------------------------------- items 10, 12, 18: resume inputs, damaged checkpoints, logs


@pytest.fixture(scope="module")
def small_run(fasta, tmp_path_factory):
    """A 2-step run started with a *relative* --fasta, not --quiet, stderr not a terminal."""
    home = tmp_path_factory.mktemp("home")
    shutil.copy(fasta, home / "genome.fa")
    cwd = os.getcwd()
    os.chdir(home)
    try:
        res = invoke("pretrain", "--fasta", "genome.fa", *FAST, "--max-steps", 2, "--val-every", 1, "--out", "run")
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    return home / "run", res


def test_progress_off_a_terminal_is_plain_lines(small_run):
    """Item 18: no carriage-return redraws in a log; a few plain step lines with the numbers."""
    _, res = small_run
    err = res.stderr
    assert "\r" not in err
    steps = [ln for ln in err.splitlines() if ln.startswith("pretrain step ")]
    assert 1 <= len(steps) <= 4, err  # the first step, then one after each validation
    assert "seq 32" in steps[0] and "bits/base" in steps[0] and "tok/s" in steps[0]
    assert any("val bits/base" in ln for ln in steps) and "trained 2 steps in" in err


def test_plain_progress_and_tty_choice(monkeypatch, capsys):
    from mamba_genome.progress import PlainProgress, format_eta, progress_bar, stream_is_tty

    bar = PlainProgress(total=1000, desc="ingest x.fa", unit="B", unit_scale=True, interval=3600)
    for _ in range(10):
        bar.update(100)
    bar.close()
    out = capsys.readouterr().err.splitlines()
    assert len(out) == 1 and out[0].startswith("ingest x.fa: 1.0k/1.0k B  100%")  # only the final line
    quick = PlainProgress(total=3, desc="classify", unit="win", interval=0)
    for _ in range(3):
        quick.update(1)
    quick.close()
    assert len(capsys.readouterr().err.splitlines()) == 3
    assert format_eta(130) == "2m10s" and format_eta(4000) == "1h06m" and format_eta(None) == "?"
    monkeypatch.setenv("MAMBA_GENOME_PROGRESS", "plain")
    assert not stream_is_tty() and isinstance(progress_bar(10, desc="x"), PlainProgress)
    monkeypatch.setenv("MAMBA_GENOME_PROGRESS", "bar")
    assert type(progress_bar(10, desc="x", disable=True)).__name__ == "tqdm"


def test_resume_from_another_directory_and_moved_fasta(small_run, fasta, tmp_path):
    """Item 10: args.json holds absolute paths; a --fasta given again wins, and must be the same genome."""
    src, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    saved = json.loads((run / "args.json").read_text())["args"]
    assert Path(saved["fasta"]).is_absolute() and Path(saved["fasta"]).name == "genome.fa"
    moved = tmp_path / "moved.fa"
    os.replace(saved["fasta"], moved)  # the genome moves after the run started
    try:
        res = invoke("pretrain", "--out", run, "--resume", "--max-steps", 3, "-q")
        one_error_line(res, "not found", "give --fasta PATH again")
        other = tmp_path / "other.fa"
        other.write_text(">chrX\n" + "ACGT" * 400 + "\n")
        res = invoke("pretrain", "--out", run, "--resume", "--max-steps", 3, "--fasta", other, "-q")
        one_error_line(res, "not the genome this run was trained on", "contigs missing")
        res = invoke("pretrain", "--out", run, "--resume", "--max-steps", 3, "--fasta", moved, "-q")
        assert res.exit_code == 0, res.output
        assert json.loads((run / "metrics.json").read_text())["steps"] == 3
        assert json.loads((run / "args.json").read_text())["args"]["fasta"] == str(moved.resolve())
    finally:
        os.replace(moved, saved["fasta"])


@pytest.mark.parametrize("damage,needles", [
    pytest.param(lambda p: p.write_bytes(b""), ("is empty", "--force"), id="zero-bytes"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), ("truncated or corrupt",),
                 id="truncated"),
    pytest.param(lambda p: torch.save({"state_dict": {}, "global_step": 1, "x": Path("planted")}, p),
                 ("not written by mamba-genome", "weights_only"), id="planted-pickle"),
])
def test_damaged_last_ckpt_is_one_error_line(small_run, tmp_path, damage, needles):
    """Item 12: each damaged last.ckpt is one `error:` line saying what is wrong and what to do."""
    src, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    damage(run / "last.ckpt")
    res = invoke("pretrain", "--out", run, "--resume", "--max-steps", 3, "-q")
    one_error_line(res, "last.ckpt", *needles)


def test_force_recognises_runs_from_before_markers(tmp_path):
    """A run directory written before the marker existed is still ours to --force (by its args.json);
    a directory whose args.json is someone else's is not."""
    from mamba_genome.errors import UserError
    from mamba_genome.workflows.pretrain import RUN_FILES

    old = tmp_path / "old"
    old.mkdir()
    (old / "args.json").write_text(json.dumps({"args": {}, "resolved": {}, "model_config": {}}))
    (old / "metrics.json").write_text("{}")
    (old / "README.txt").write_text("the user's")
    rd = RunDir(old, "pretrain", RUN_FILES)
    rd.check(force=True)
    rd.prepare(force=True)
    rd.release()
    assert sorted(p.name for p in old.iterdir()) == sorted([LOCK_NAME, MARKER, "README.txt"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "args.json").write_text('{"name": "not ours"}')
    with pytest.raises(UserError, match="not written by mamba-genome"):
        RunDir(other, "pretrain", RUN_FILES).check(force=True)
