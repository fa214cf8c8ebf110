"""`mamba-genome bench train` at a tiny CPU size, and `bench kernels` dispatch."""
import json

import pytest
import torch
from click.testing import CliRunner

from mamba_genome.cli import main
from mamba_genome.workflows.bench_train import BenchTrainConfig, run_bench_train
from mamba_genome.errors import UserError

TINY = ["bench", "train", "--preset", "tiny", "--seq-len", "64", "--batch-size", "2", "--steps", "2",
        "--warmup", "1", "--device", "cpu", "--precision", "32", "-q"]


def test_bench_train_cli_prints_fields_and_json(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(main, [*TINY, "--json", str(out)])
    assert r.exit_code == 0, r.output
    for field in ("tokens/s", "step", "forward+loss", "backward", "optimizer", "peak memory", "scan share"):
        assert field in r.output
    d = json.loads(out.read_text())
    assert d["tokens_per_step"] == 128 and d["seq_len"] == 64 and d["batch_size"] == 2
    assert d["tokens_per_s"] > 0 and d["step_ms"] > 0 and len(d["step_ms_all"]) == 2
    assert d["peak_mem_gib"] is None and d["device"] == "cpu"
    assert 0 < d["scan_share"] and d["scan_fwd_ms"] > 0
    # no hand-set flags: the engine's CPU plan, the whole batch in one forward, default runtime
    assert (d["micro_batch"], d["accumulate"], d["policy"], d["plan"]) == (2, 1, None, "the planner's")
    assert d["runtime"]["scan_state_every"] == 64 and not d["runtime"]["gradient_checkpointing"]
    assert "plan" in r.output and "2 x 64 tokens per forward" in r.output
    assert not list(tmp_path.glob(".*.tmp"))


def test_bench_train_checkpointing_bf16_no_scan():
    res = run_bench_train(BenchTrainConfig(preset="tiny", seq_len=32, steps=1, warmup=0, device="cpu",
                                           grad_checkpointing=True, scan_share=False))
    assert res.grad_checkpointing and res.scan_share is None
    assert 1.0 < res.loss < 3.0          # ~ln(4) on random A/C/G/T
    assert res.fwd_ms > 0 and res.bwd_ms > 0


@pytest.mark.parametrize("args,msg", [
    (["--preset", "huge"], "--preset"),
    (["--checkpoint-bf16"], "only applies with --grad-checkpointing"),
    (["--micro-batch-size", "0"], "--micro-batch-size"),
    (["--seq-len", "1"], "--seq-len"),
    (["--steps", "0"], "--steps"),
    (["--device", "cuda:7"], "cuda"),
])
def test_bench_train_bad_flags_one_line_error(args, msg):
    r = CliRunner().invoke(main, ["bench", "train", "--device", "cpu", *args])
    assert r.exit_code in (1, 2)
    assert msg in r.output and "Traceback" not in r.output


def test_config_validation_names_flag():
    with pytest.raises(UserError, match="--batch-size"):
        BenchTrainConfig(batch_size=0)


def test_bench_kernels_without_script_is_clear_error(monkeypatch):
    import mamba_genome.cli.bench as bench_mod

    monkeypatch.setattr(bench_mod, "_bench_kernels_script", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    r = CliRunner().invoke(main, ["bench", "kernels"])
    assert r.exit_code == 1
    assert "error: benchmarks/bench_kernels.py not found" in r.output


def test_bench_kernels_without_gpu_is_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = CliRunner().invoke(main, ["bench", "kernels"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.startswith("error: `bench kernels` times the Triton kernels on a CUDA GPU")


GiB = 1 << 30


def test_bench_plan_is_the_engines_and_hand_set_flags_override():
    """On a GPU with 24 GiB free, 64 x 2^14 tokens of 1.4m: the planner's micro-batch and policy (the memory
    planner's own choice for that shape, tests/test_memory_plan.py), 4 micro-batches per step; each hand-set
    flag wins over its part of the plan."""
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.train.memory import plan_stage
    from mamba_genome.workflows.bench_train import plan_step

    cfg = BenchTrainConfig(preset="1.4m", seq_len=1 << 14, batch_size=64)
    _, plan = plan_step(cfg, "cuda", 24 * GiB)
    ref = plan_stage(MambaConfig.from_preset("1.4m"), 1 << 14, 64, device_type="cuda", free_bytes=24 * GiB)
    assert (plan.policy, plan.micro_batch, plan.accumulate, plan.runtime) == ("none-s8", 16, 4, ref.runtime)
    assert not cfg.hand_set
    _, big = plan_step(cfg, "cuda", 139 * GiB)
    assert (big.micro_batch, big.accumulate) == (64, 1)
    hand = BenchTrainConfig(preset="1.4m", seq_len=1 << 14, batch_size=64, micro_batch_size=8,
                            grad_checkpointing=True, scan_state_every=16)
    _, p = plan_step(hand, "cuda", 139 * GiB)
    assert hand.hand_set and (p.micro_batch, p.accumulate) == (8, 8)
    assert p.runtime.gradient_checkpointing and p.runtime.scan_state_every == 16 and p.policy is None
    _, low = plan_step(BenchTrainConfig(preset="7m", seq_len=1 << 20, memory="low"), "cuda", 139 * GiB)
    assert low.policy == "ckpt-bf16" and low.runtime.checkpoint_bf16


def test_bench_runs_the_planned_micro_batches(monkeypatch):
    """A (fake) small GPU's plan, run on CPU: 4 sequences per step as the planner's micro-batches, the
    step accumulating them, and the result saying which plan ran."""
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.runtime import RuntimeOptions
    from mamba_genome.train.memory import GPU_MEMORY_FRACTION, bytes_per_token, fixed_bytes
    from mamba_genome.workflows import bench_train

    arch = MambaConfig.from_preset("tiny")
    rt = RuntimeOptions(gradient_checkpointing=True, checkpoint_bf16=True)
    free = int((fixed_bytes(arch) + 2.5 * bytes_per_token(arch, rt) * 64) / GPU_MEMORY_FRACTION)   # room for 2 windows
    monkeypatch.setattr(bench_train, "device_memory_of", lambda device: ("cuda", free))
    res = run_bench_train(BenchTrainConfig(preset="tiny", seq_len=64, batch_size=4, steps=1, warmup=0, device="cpu",
                                           precision="32", scan_share=False))
    _, plan = bench_train.plan_step(BenchTrainConfig(preset="tiny", seq_len=64, batch_size=4), "cuda", free)
    assert (res.micro_batch, res.accumulate) == (plan.micro_batch, plan.accumulate) == (2, 2)
    assert res.batch_size == 4 and res.tokens_per_step == 4 * 64 and res.policy == plan.policy
    assert res.runtime == plan.runtime.to_dict() and res.plan == "the planner's"
    assert 1.0 < res.loss < 3.0 and res.fwd_ms > 0 and res.bwd_ms > 0
