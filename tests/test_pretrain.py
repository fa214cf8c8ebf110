"""`mamba-genome pretrain` end to end on CPU: run directory, metrics, resume, budgets, bad flags."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import load_model
from mamba_genome.cli import main
from mamba_genome.errors import UserError
from mamba_genome.model.runtime import RUNTIME_FIELDS
from mamba_genome.workflows.pretrain import BUNDLED_FASTA, PretrainArgs, _plan

DATA = Path(__file__).parent / "data"
TINY = json.dumps({"d_model": 16, "n_layer": 1})
FAST = ["--seq-len", "32", "--batch-size", "2", "--val-windows", "4", "--accelerator", "cpu",
        "--model-overrides", TINY]
METRIC_KEYS = ("val_loss", "val_bits_per_base", "val_perplexity", "tokens_seen", "wall_seconds", "tokens_per_second")


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    d = tmp_path_factory.mktemp("fa")
    shutil.copy(DATA / "ecoli_MG1655_3kb.fa", d / "ecoli.fa")
    return d / "ecoli.fa"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run(fasta, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    res = invoke("pretrain", "--fasta", fasta, *FAST, "--max-steps", 4, "--val-every", 2, "--out", out)
    assert res.exit_code == 0, res.output
    return out, res


def test_run_directory_and_metrics(run):
    out, res = run
    assert res.stdout.strip().splitlines()[-1] == str(out)
    for name in ("best", "last", "last.ckpt", "metrics.json", "split.json", "args.json", "loss_curve.png"):
        assert (out / name).exists(), name
    assert list((out / "logs").glob("v0/metrics.csv"))
    m = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert math.isfinite(m[key]), key
    assert m["steps"] == 4 and m["tokens_seen"] == 4 * 2 * 32
    assert m["val_bits_per_base"] == pytest.approx(m["val_loss"] / math.log(2))
    assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]), rel=1e-5)
    assert "val_bits/base" in res.stderr and "tokens/s" in res.stderr  # summary table


def test_exported_models_load(run):
    out, _ = run
    for sub in ("best", "last"):
        model, meta = load_model(out / sub)
        assert meta["model_type"] == "lm" and model.config.d_model == 16
        extra = meta["extra"]
        assert extra["task"] == "pretrain" and extra["tokens_seen"] > 0 and "contig tails" in extra["split"]
    model, _ = load_model(out)  # a run directory resolves to best/
    with torch.no_grad():
        assert torch.isfinite(model.loss(torch.randint(5, 9, (1, 32)))).all()


def test_checkpoint_is_weights_only(run):
    out, _ = run
    ckpt = torch.load(out / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 4 and ckpt["mg_state"]["tokens_seen"] == 256


def test_evaluate_the_run(run, fasta):
    out, _ = run
    res = invoke("evaluate", out, "--fasta", fasta, "--seq-len", 64, "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["bases"] > 2900 and math.isfinite(r["bits_per_base"])
    assert r["perplexity"] == pytest.approx(2 ** r["bits_per_base"], rel=1e-6)


def test_resume_continues(run, tmp_path):
    src, _ = run
    out = tmp_path / "resumed"
    shutil.copytree(src, out)
    res = invoke("pretrain", "--out", out, "--resume", "--max-steps", 6, "--val-every", 2, "--accelerator", "cpu", "-q")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 6 and m["tokens_seen"] == 6 * 2 * 32  # continued, not restarted
    assert (out / "logs" / "v1" / "metrics.csv").is_file()


def test_refuses_to_overwrite(run, fasta):
    out, _ = run
    res = CliRunner().invoke(main, ["pretrain", "--fasta", str(fasta), *FAST, "--max-steps", "2", "--out", str(out)])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and "--resume" in res.stderr and "--force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_force_overwrites_and_seq_warmup(fasta, tmp_path):
    from mamba_genome.train.rundir import MARKER

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # an earlier run of ours (it has the marker)...
    (out / MARKER).write_text(json.dumps({"tool": "mamba-genome", "command": "pretrain", "files": ["metrics.json"]}))
    (out / "notes.txt").write_text("mine")   # ...and a file the user put there, which --force keeps
    # seq-len 64 with warmup from 32: 2 stages, batch 4 x 32 then 2 x 64 (constant tokens per step)
    res = invoke("pretrain", "--fasta", fasta, *FAST[2:], "--seq-len", 64, "--batch-size", 2, "--max-steps", 6,
                 "--seq-warmup-start", 32, "--val-windows", 2, "--out", out, "--force", "-q")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 6 and m["tokens_seen"] == 6 * 2 * 64
    assert (out / "notes.txt").read_text() == "mine"
    rows = [r.split(",") for r in (out / "logs" / "v0" / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("seq_len")
    lengths = [float(r[col]) for r in rows[1:] if r[col]]
    assert lengths[0] == 32 and lengths[-1] == 64 and lengths == sorted(lengths)


def test_max_time_stops(fasta, tmp_path):
    out = tmp_path / "timed"
    res = invoke("pretrain", "--fasta", fasta, *FAST, "--max-time", "3s", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped_by"] == "max_time" and m["steps"] >= 1
    assert math.isfinite(m["val_loss"])


@pytest.mark.parametrize("args,message", [
    pytest.param(["--fasta", "x.fa", "--data", "y"], "either --fasta or --data", id="fasta+data"),
    pytest.param(["--max-steps", "2", "--max-time", "1m"], "exclude each other", id="two-budgets"),
    pytest.param(["--seq-len", "8"], "--seq-len must be at least 16", id="seq-len"),
    pytest.param(["--max-time", "soon"], "--max-time", id="bad-duration"),
    pytest.param(["--data", "no/such/store"], "no such token store", id="missing-store"),
    pytest.param(["--fasta", "no/such.fa"], "no/such.fa", id="missing-fasta"),
    pytest.param(["--resume"], "has no last.ckpt", id="resume-nothing"),
    pytest.param(["--model-overrides", "[1]"], "JSON object", id="overrides"),
    pytest.param(["--lr", "5"], "--lr", id="lr"),
    pytest.param(["--checkpoint-bf16"], "only applies with --grad-checkpointing", id="bf16-ckpt-alone"),
    pytest.param(["--scan-state-every", "12"], "--scan-state-every must be a positive multiple of 8", id="state-every"),
    pytest.param(["--checkpoint-skip", "2"], "only applies with --grad-checkpointing", id="skip-alone"),
])
def test_bad_flags_one_line(args, message, tmp_path):
    res = CliRunner().invoke(main, ["pretrain", *args, "--out", str(tmp_path / "r")])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_strategy_lightning_refuses_is_one_line(fasta, tmp_path):
    """FSDP runs on CUDA only (Lightning's rule): on CPU the engine's Trainer assembly says so in one line,
    before the run records its arguments."""
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["pretrain", "--fasta", str(fasta), *FAST, "--max-steps", "2", "--devices", "2",
                                    "--strategy", "fsdp", "--out", str(out)])
    assert res.exit_code == 1 and res.stderr.startswith("error: --accelerator cpu --devices 2 --strategy fsdp: ")
    assert "GPU" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (out / "args.json").exists()


def test_genome_shorter_than_window(fasta, tmp_path):
    res = CliRunner().invoke(main, ["pretrain", "--fasta", str(fasta), *FAST[2:], "--seq-len", "4096",
                                    "--max-steps", "2", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert "too short for --seq-len 4,096" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_cpu_defaults_and_gpu_recipe(monkeypatch):
    cpu = _plan(PretrainArgs(accelerator="cpu"))
    assert cpu.budget == "max_time" and cpu.precision == "32-true" and cpu.num_workers == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    h200 = ("cuda", 130 << 30)   # a fake device's free memory: the planner, not the machine, decides
    gpu = _plan(PretrainArgs(seq_len=2 ** 15), memory_info=h200)
    assert gpu.tokens_per_step == 2 ** 20 and gpu.lr == 8e-3 and gpu.precision == "bf16-mixed"
    assert gpu.micro_batch * gpu.accumulate == gpu.batch_size and gpu.accumulate == 1   # it all fits at once
    small = _plan(PretrainArgs(preset="7m", seq_len=2 ** 15), memory_info=("cuda", 8 << 30))
    assert small.tokens_per_step == 2 ** 20 and small.micro_batch * small.accumulate == small.batch_size
    assert small.accumulate > 1   # 8 GiB cannot hold 2^20 tokens of 7m activations: accumulation
    ddp = _plan(PretrainArgs(seq_len=1024, devices="4"), memory_info=h200)
    assert ddp.world == 4 and ddp.batch_size == 1024 and ddp.micro_batch * ddp.accumulate * 4 == 1024


def test_gpu_loader_workers_scale_with_cpus():
    from mamba_genome.workflows.pretrain import gpu_loader_workers

    assert gpu_loader_workers(1, cpus=16) == 8 and gpu_loader_workers(1, cpus=128) == 8
    assert gpu_loader_workers(2, cpus=16) == 4 and gpu_loader_workers(8, cpus=128) == 8
    assert gpu_loader_workers(1, cpus=2) == 2 and gpu_loader_workers(4, cpus=8) == 2
    assert 2 <= gpu_loader_workers() <= 8


def test_bundled_genome_ships():
    assert BUNDLED_FASTA.is_file() and BUNDLED_FASTA.stat().st_size > 1_000_000
    with pytest.raises(UserError):
        PretrainArgs(preset="huge")


@pytest.mark.parametrize("content", [b"", b"not a fasta\n", b">only_header\n"])
def test_bad_input_leaves_no_run_directory(tmp_path, content):
    bad = tmp_path / "bad.fa"
    bad.write_bytes(content)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["pretrain", "--fasta", str(bad), "--out", str(out)])
    assert res.exit_code == 1 and res.output.startswith("error:") and "Traceback" not in res.output
    assert not out.exists()


def test_other_ranks_reuse_rank0_run_dir(tmp_path, monkeypatch):
    """`--devices 2` makes Lightning re-run the command line for rank 1 after rank 0 has created the
    run directory: rank 1 must take that directory as it is, not refuse it as non-empty."""
    from mamba_genome.workflows import pretrain as wf

    run = tmp_path / "run"
    for k in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS", wf.RUN_DIR_ENV):
        monkeypatch.delenv(k, raising=False)
    assert wf.launch_rank() == 0
    made = wf._prepare_run_dir(PretrainArgs(out=str(run)), create=True)
    (made / "args.json").write_text("{}")
    with pytest.raises(UserError, match="not empty"):            # a second rank-0 run is refused
        wf._prepare_run_dir(PretrainArgs(out=str(run)), create=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert wf.launch_rank() == 1
    for create in (False, True):
        got = wf._prepare_run_dir(PretrainArgs(out=None), create=create)   # no --out: uses rank 0's
        assert got.resolve() == run.resolve()
    assert (run / "args.json").read_text() == "{}"


def test_several_processes_need_out(monkeypatch):
    from mamba_genome.workflows import pretrain as wf

    for k in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK", "SLURM_NTASKS", wf.RUN_DIR_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UserError, match="give --out"):
        wf._prepare_run_dir(PretrainArgs(out=None), create=False)


def test_checkpointed_training_runs(fasta, tmp_path):
    """--grad-checkpointing (with its checkpointed blocks and kept scan states) through the whole
    pretrain command: it trains, validates and saves like a plain run."""
    out = tmp_path / "ckpt"
    res = invoke("pretrain", "--fasta", fasta, *FAST, "--max-steps", 3, "--val-every", 3, "--grad-checkpointing",
                 "--scan-state-every", 16, "--checkpoint-skip", 1, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 3 and math.isfinite(m["val_loss"])
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert not set(RUNTIME_FIELDS) & set(cfg["config"])     # the checkpoint holds the architecture only
    rt = json.loads((out / "args.json").read_text())["resolved"]["stages"][-1]["runtime"]
    assert rt["gradient_checkpointing"] is True and rt["scan_state_every"] == 16 and rt["checkpoint_skip"] == 1
    assert m["stages"][-1]["runtime"] == rt and 0 <= m["val_fraction"] < 1


def test_progress_reads_the_loss_only_when_it_prints(capsys):
    """The progress fields read the step's loss (a GPU sync): plain lines compute them only for the lines
    they print (the first step, a new window length, then once per interval), not after every step."""
    from types import SimpleNamespace

    from mamba_genome.train.callbacks import StepProgressBar

    calls = []

    def fields(trainer, pl_module, batch):
        calls.append(trainer.global_step)
        return {"seq": str(batch["input_ids"].shape[1])}

    bar = StepProgressBar(total_steps=100, fields=fields, interval=3600.0, tty=False)
    trainer = SimpleNamespace(is_global_zero=True, global_step=0)
    bar.on_train_start(trainer, None)
    for step, L in enumerate([64] * 10 + [128] * 10, start=1):
        trainer.global_step = step
        bar.on_train_batch_end(trainer, None, None, {"input_ids": torch.zeros(2, L)}, step - 1)
    assert calls == [1, 11]
    assert capsys.readouterr().err.count("pretrain step") == 2


def test_short_gpu_runs_take_smaller_steps(monkeypatch):
    """A --max-time / --max-tokens run that would make fewer than ~2,000 steps of 2^20 tokens halves its
    step down to 2^18 (the 270 s time-to-quality sweep); step budgets, long runs and --batch-size keep theirs."""
    from mamba_genome.workflows.pretrain import gpu_tokens_per_step

    assert [gpu_tokens_per_step(t) for t in (None, 1e6, 0.9e9, 1.9e9, 4e9, 1e12)] == \
        [2 ** 20, 2 ** 18, 2 ** 18, 2 ** 19, 2 ** 20, 2 ** 20]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    h200 = ("cuda", 130 << 30)

    def step(**kw):
        p = _plan(PretrainArgs(**kw), memory_info=h200)
        assert p.micro_batch * p.accumulate * p.world == p.batch_size
        return p.tokens_per_step

    assert step(seq_len=2 ** 14, max_time="270s") == 2 ** 18     # 16 windows, as in BENCHMARKS.md 4
    assert step(seq_len=2 ** 14, max_time="10m") == 2 ** 19
    assert step(seq_len=2 ** 14, max_time="1h") == 2 ** 20
    assert step(seq_len=2 ** 20, max_time="270s") == 2 ** 20     # never below one window
    assert step(seq_len=2 ** 14, max_tokens=10 ** 8) == 2 ** 18
    assert step(seq_len=2 ** 14, max_tokens=10 ** 10) == 2 ** 20
    assert step(seq_len=2 ** 14) == step(seq_len=2 ** 14, max_steps=100) == 2 ** 20
    assert step(seq_len=2 ** 14, max_time="270s", batch_size=64) == 2 ** 20
    assert step(seq_len=2 ** 14, max_time="270s", devices="4") == 2 ** 20   # 4 GPUs train 4x the tokens


def test_resume_keeps_the_step_size_the_budget_chose(tmp_path):
    """A short run's step size comes from its budget; --resume with another budget keeps the run's own (the
    windows and the schedule continue as they were), and an explicit --batch-size of the run stays too."""
    from mamba_genome.workflows.pretrain import _merge_resume_args

    run = tmp_path / "run"
    run.mkdir()
    record = {"args": {"preset": "1.4m", "seq_len": 16384, "batch_size": None, "max_time": 270.0},
              "resolved": {"batch_size": 16, "seq_len": 16384}}
    (run / "args.json").write_text(json.dumps(record))
    merged = _merge_resume_args(PretrainArgs(out=str(run), resume=True, max_time="1h"), run)
    assert merged.batch_size == 16 and merged.max_time == 3600.0
    record["args"]["batch_size"], record["resolved"]["batch_size"] = 8, 8
    (run / "args.json").write_text(json.dumps(record))
    assert _merge_resume_args(PretrainArgs(out=str(run), resume=True), run).batch_size == 8
