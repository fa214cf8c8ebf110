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
    assert not list(tmp_path.glob(".*.tmp"))


def test_bench_train_checkpointing_bf16_no_scan():
    res = run_bench_train(BenchTrainConfig(preset="tiny", seq_len=32, steps=1, warmup=0, device="cpu",
                                           grad_checkpointing=True, scan_share=False))
    assert res.grad_checkpointing and res.scan_share is None
    assert 1.0 < res.loss < 3.0          # ~ln(4) on random A/C/G/T
    assert res.fwd_ms > 0 and res.bwd_ms > 0


@pytest.mark.parametrize("args,msg", [
    (["--preset", "huge"], "--preset"),
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
