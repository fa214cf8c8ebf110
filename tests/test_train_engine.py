"""The training engine's choices (mamba_genome.train.engine): the memory planner's micro-batch and
policy per sequence-length stage, as they reach the Trainer's accumulation and the model's runtime;
the validation interval that keeps validation under 3% of the clock; old checkpoints still loading."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import load_model, save_model
from mamba_genome.cli import main
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.model.runtime import RUNTIME_FIELDS, RuntimeOptions
from mamba_genome.train import engine
from mamba_genome.train.engine import (ExpertOverrides, StagePlanner, ValidationSchedule, split_batch,
                                       val_interval_for_fraction)
from mamba_genome.train.memory import GPU_MEMORY_FRACTION, bytes_per_token, fixed_bytes, plan_stage

GiB = 1 << 30


def test_split_batch_is_even_and_covers_the_batch():
    for per_device in (1, 3, 7, 10, 64, 96, 1024):
        for micro in (1, 2, 5, 24, 32, 2000):
            m, a = split_batch(per_device, micro)
            assert m <= max(1, min(micro, per_device)) and m * a >= per_device, (per_device, micro)
            assert a <= math.ceil(per_device / min(micro, per_device)) + 1
    assert split_batch(64, 24) == (16, 4)     # 4 even micro-batches rather than 24 + 24 + 16


def test_planner_per_stage_on_a_big_gpu():
    """1.4m, 2^20 tokens per step, 130 GiB free: every warmup stage gets the planner's full-occupancy
    micro-batch (more windows when shorter) and the fastest policy; the accumulation follows."""
    arch = MambaConfig.from_preset("1.4m")
    final = 1 << 14
    planner = StagePlanner(arch, lambda L: 64 * final // L, device_type="cuda", free_bytes=130 * GiB)
    for L in (1 << 10, 1 << 12, final):
        p = planner.plan(L)
        ref = plan_stage(arch, L, 64 * final // L, device_type="cuda", free_bytes=130 * GiB)
        assert p.runtime == ref.runtime and not p.runtime.gradient_checkpointing
        assert p.micro_batch == ref.micro_batch and p.micro_batch * L >= 1 << 19   # full occupancy at every stage
        assert p.micro_batch * p.accumulate == 64 * final // L and p.accumulate == -(-(64 * final // L) // p.micro_batch)
        assert f"seq-len {L:,}" in p.reason


def test_planner_counts_both_strand_rows():
    """A both-strands classifier runs every window and its reverse complement: the planner sizes its
    micro-batch as for windows twice as long, and the plan keeps the real window length."""
    arch = MambaConfig.from_preset("1.4m")
    one = StagePlanner(arch, lambda _: 256, device_type="cuda", free_bytes=24 * GiB)
    two = StagePlanner(arch, lambda _: 256, device_type="cuda", free_bytes=24 * GiB, rows_per_window=2)
    L = 1 << 13
    assert two.plan(L).seq_len == L and two.plan(L).micro_batch == one.plan(2 * L).micro_batch
    assert two.plan(L).micro_batch < one.plan(L).micro_batch


def test_planner_checkpoints_when_memory_is_short_and_experts_override():
    arch = MambaConfig.from_preset("7m")
    L = 1 << 20
    small = fixed_bytes(arch) + 1.05 * bytes_per_token(arch, RuntimeOptions(gradient_checkpointing=True)) * L
    p = StagePlanner(arch, lambda _: 1, device_type="cuda", free_bytes=int(small / GPU_MEMORY_FRACTION)).plan(L)
    assert p.runtime.gradient_checkpointing and (p.micro_batch, p.accumulate) == (1, 1)
    low = StagePlanner(arch, lambda _: 1, device_type="cuda", free_bytes=130 * GiB, memory="low").plan(L)
    assert low.runtime.gradient_checkpointing and low.runtime.checkpoint_bf16
    expert = ExpertOverrides(micro_batch_size=2, scan_state_every=16, gradient_checkpointing=True)
    p = StagePlanner(MambaConfig.from_preset("1.4m"), lambda _: 8, device_type="cuda", free_bytes=130 * GiB,
                     expert=expert).plan(1 << 14)
    assert (p.micro_batch, p.accumulate) == (2, 4) and p.runtime.scan_state_every == 16
    assert p.runtime.gradient_checkpointing and "--micro-batch-size 2" in p.reason
    cpu = StagePlanner(arch, lambda _: 4, device_type="cpu", free_bytes=None).plan(512)
    assert (cpu.micro_batch, cpu.accumulate) == (4, 1) and cpu.runtime == RuntimeOptions()


def test_stage_plans_reach_the_trainer_and_the_model(tmp_path, monkeypatch, fasta_small):
    """A CPU run planned as if on a small GPU: in every optimizer step of every stage the number and size
    of the micro-batches are the plan's, and the model runs with the plan's runtime."""
    from mamba_genome.train.lm_module import LMModule

    arch = MambaConfig.from_preset("tiny", d_model=16, n_layer=1)
    rt = RuntimeOptions(gradient_checkpointing=True, checkpoint_bf16=True)
    # room for 2.5 windows of 64 (and so 5 of 32) at the least-memory policy: 2 micro-batches per step
    free = int((fixed_bytes(arch) + 2.5 * bytes_per_token(arch, rt) * 64) / GPU_MEMORY_FRACTION)
    monkeypatch.setattr(engine, "device_memory", lambda on_gpu: ("cuda", free))
    seen = []
    orig = LMModule.training_step

    def training_step(self, batch, batch_idx):
        seen.append((self.global_step, tuple(batch["input_ids"].shape), self.trainer.accumulate_grad_batches,
                     self.model.runtime))
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(LMModule, "training_step", training_step)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["pretrain", "--fasta", str(fasta_small), "--seq-len", "64", "--seq-warmup-start",
                                    "32", "--batch-size", "4", "--max-steps", "6", "--val-every", "3", "--val-windows",
                                    "2", "--accelerator", "cpu", "--model-overrides",
                                    json.dumps({"d_model": 16, "n_layer": 1}), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    stages = {p["seq_len"]: p for p in json.loads((out / "metrics.json").read_text())["stages"]}
    assert set(stages) == {32, 64} and stages[64]["accumulate"] == 2
    for L, p in stages.items():
        assert p["micro_batch"] * p["accumulate"] == 4 * 64 // L
        steps = [s for s in seen if s[1][1] == L]
        assert steps, L
        for step in {s[0] for s in steps}:
            mine = [s for s in steps if s[0] == step]
            assert len(mine) == p["accumulate"]
            assert all(s[1][0] == p["micro_batch"] and s[2] == p["accumulate"] for s in mine)
            assert all(s[3] == RuntimeOptions(**p["runtime"]) for s in mine)


def test_val_interval_keeps_validation_under_the_fraction():
    for val_s, step_s in ((3.0, 0.1), (0.5, 2.0), (10.0, 0.01), (1e-3, 1.0)):
        k = val_interval_for_fraction(val_s, step_s, 0.03)
        assert val_s / (k * step_s + val_s) <= 0.03 + 1e-12
        assert k == 1 or val_s / ((k - 1) * step_s + val_s) > 0.03     # and no more steps than needed
    assert val_interval_for_fraction(0.0, 1.0) == 1
    with pytest.raises(ValueError):
        val_interval_for_fraction(1.0, 1.0, 1.5)


def test_validation_interval_pays_back_a_slow_first_validation():
    """Simulated run: 1 s steps, a first validation of 9 s (it compiled), then 1 s each. From the second
    validation on, the run's share of validation stays at the target, and it is already within one
    validation of it after the first."""
    f, t_train, t_val, step, vals = 0.025, 0.0, 0.0, 0, []
    nxt = 10                                               # the first validation, before anything is measured
    while step < 5000:
        step += 1
        t_train += 1.0
        if step == nxt:
            took = 9.0 if not vals else 1.0
            t_val += took
            vals.append((step, t_val / (t_val + t_train)))
            nxt = step + engine.next_val_interval(took, t_val, t_train, 1.0, f)
    assert len(vals) > 20
    assert all(frac <= f + 1e-9 for _, frac in vals[2:])
    assert vals[1][1] <= f + 1.0 / vals[1][0]
    assert engine.next_val_interval(1.0, 1.0, 1000.0, 1.0, f) == val_interval_for_fraction(1.0, 1.0, f)


def test_validation_schedule_fixed_and_adaptive():
    fixed = ValidationSchedule(4)
    assert [s for s in range(13) if fixed.due(s)] == [4, 8, 12]
    adaptive = ValidationSchedule(2, max_fraction=0.03)
    assert adaptive.due(2)                     # before anything is measured: every 2 steps
    adaptive.last_val_step, adaptive.min_interval = 2, 50   # a validation that took as long as 1.5 steps
    assert not adaptive.due(4) and not adaptive.due(51) and adaptive.due(52)
    adaptive.set_every(100)
    assert not adaptive.due(52) and adaptive.due(102)
    state = adaptive.state_dict()
    again = ValidationSchedule(2, max_fraction=0.03)
    again.load_state_dict(state)
    assert (again.last_val_step, again.min_interval, again.every) == (2, 50, 100)


def test_old_config_with_runtime_keys_loads(tmp_path):
    """A config.json written before run-time options left MambaConfig (with gradient_checkpointing and
    friends in "config") loads, the keys ignored; a new one holds none of them."""
    torch.manual_seed(0)
    model = MambaLM(MambaConfig.from_preset("tiny", d_model=16, n_layer=2))
    d = save_model(model, tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    assert not set(RUNTIME_FIELDS) & set(meta["config"])
    meta["config"].update(gradient_checkpointing=True, checkpoint_bf16=False, checkpoint_keep_scan=True,
                          checkpoint_skip=0, scan_state_every=64, scan_backend=None)
    (d / "config.json").write_text(json.dumps(meta))
    loaded, _ = load_model(d, scan_backend="torch")
    assert loaded.config == model.config and loaded.runtime == RuntimeOptions(scan_backend="torch")
    x = torch.randint(5, 9, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


@pytest.fixture(scope="module")
def fasta_small(tmp_path_factory):
    import random

    rng = random.Random(0)
    p = tmp_path_factory.mktemp("fa") / "g.fa"
    with open(p, "w") as fh:
        for i, n in enumerate((6000, 2000)):
            fh.write(f">c{i}\n{''.join(rng.choice('ACGT') for _ in range(n))}\n")
    return p


def test_other_ranks_plan_for_rank0s_memory(monkeypatch):
    """The ranks Lightning starts re-run the command: they plan for the free memory rank 0 measured."""
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(engine.FREE_BYTES_ENV, str(40 * GiB))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (7 * GiB, 80 * GiB))
    assert engine.device_memory(True) == ("cuda", 7 * GiB)          # rank 0 measures (and publishes) ...
    assert engine.device_memory(False) == ("cpu", None)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert engine.device_memory(True) == ("cuda", 7 * GiB)          # ... what rank 1 then plans for


def _fake_gpu_free(arch, windows: float, seq_len: int) -> int:
    """Free memory with room for ``windows`` windows of ``seq_len`` at the least-memory policy."""
    rt = RuntimeOptions(gradient_checkpointing=True, checkpoint_bf16=True)
    return int((fixed_bytes(arch) + windows * bytes_per_token(arch, rt) * seq_len) / GPU_MEMORY_FRACTION)


def test_finetune_runs_each_warmup_stage_at_its_own_plan(tmp_path, monkeypatch):
    """finetune with sequence-length warmup (64 then 128 bp, 4 windows per step) planned as if on a small
    GPU: the 64-bp epochs run the 4 windows in one forward, the 128-bp epochs in the planner's smaller
    micro-batches; every step of every stage has the plan's micro-batch, accumulation and runtime."""
    from pathlib import Path

    from mamba_genome.train.classify_module import ClassifyModule
    from mamba_genome.workflows.finetune import FinetuneArgs, finetune

    from test_memory_plan import FakeDevice

    from mamba_genome.train import memory as mem

    data = Path(__file__).parent / "data"
    arch = MambaConfig.from_preset("tiny", d_model=16, n_layer=1)
    free = _fake_gpu_free(arch, 2.5, 128)
    monkeypatch.setattr(engine, "device_memory", lambda on_gpu: ("cuda", free))
    probes = []

    def fake_gpu_tools(model, precision):   # the classifier's probe step, on a fake GPU where the plans fit
        step, dev = mem.lm_probe_step(model, "cpu"), FakeDevice(arch, capacity=free)
        return (lambda plan: (probes.append((plan.seq_len, plan.micro_batch)), dev.step(plan), step(plan))), dev

    monkeypatch.setattr(engine, "probe_tools", fake_gpu_tools)
    seen = []
    orig = ClassifyModule.training_step

    def training_step(self, batch, batch_idx):
        seen.append((self.global_step, tuple(batch["input_ids"].shape), self.trainer.accumulate_grad_batches,
                     self.model.runtime))
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(ClassifyModule, "training_step", training_step)
    m = finetune(FinetuneArgs(classes=(f"COL={data / 'saureus_COL_8k.fa'}", f"N315={data / 'saureus_N315_8k.fa'}"),
                              seq_len=128, seq_len_start=64, batch_size=4, max_steps=4, steps_per_epoch=2,
                              val_windows=2, test_windows=2, accelerator="cpu", model_overrides={"d_model": 16,
                              "n_layer": 1}, out=str(tmp_path / "ft"), progress=False))
    stages = {p["seq_len"]: p for p in m["stages"]}
    assert set(stages) == {64, 128}
    assert (stages[64]["micro_batch"], stages[64]["accumulate"]) == (4, 1)
    assert stages[128]["micro_batch"] < 4 and stages[128]["micro_batch"] * stages[128]["accumulate"] == 4
    assert probes == [(64, 4), (128, stages[128]["micro_batch"])]     # one probe step per stage, which fitted
    for L, p in stages.items():
        steps = [s for s in seen if s[1][1] == L]
        assert {s[0] for s in steps} == ({0, 1} if L == 64 else {2, 3}), L
        for step in {s[0] for s in steps}:
            mine = [s for s in steps if s[0] == step]
            assert len(mine) == p["accumulate"]
            assert all(s[1][0] == p["micro_batch"] and s[2] == p["accumulate"] for s in mine)
            assert all(s[3] == RuntimeOptions(**p["runtime"]) for s in mine)


def test_probe_steps_the_plan_down_on_a_fake_gpu_and_cpu_is_unprobed(tmp_path, monkeypatch, fasta_small):
    """pretrain planned for a (fake) GPU whose steps need 1.3x the planner's estimate: at the start of each
    stage one probe step (the fake OOM device of test_memory_plan, over a real CPU forward and backward)
    runs out of memory, the engine steps the micro-batch down, and the training steps run at the probed
    plan, recorded in metrics.json. A CPU run never probes."""
    from test_memory_plan import FakeDevice

    from mamba_genome.train import memory as mem
    from mamba_genome.train.lm_module import LMModule

    monkeypatch.setattr(mem, "WORKSPACE_BYTES", 0)   # a tiny model: let activations decide
    arch = MambaConfig.from_preset("tiny", d_model=16, n_layer=1)
    free = int(mem.estimate_bytes(arch, mem.runtime_of("none-s8"), 64, 4) / GPU_MEMORY_FRACTION * 1.01)  # the whole step fits
    monkeypatch.setattr(engine, "device_memory", lambda on_gpu: ("cuda", free))
    real_tools = engine.probe_tools
    probes = []

    def fake_gpu_tools(model, precision):
        assert real_tools(model, precision) is None          # the model is on CPU: no CUDA probe ...
        step = mem.lm_probe_step(model, "cpu")               # ... so a real CPU step under a fake GPU
        dev = FakeDevice(arch, capacity=free, scale=1.3)

        def step_fn(plan):
            probes.append((plan.seq_len, plan.micro_batch))
            dev.step(plan)      # out of memory above the fake device, as a GPU would be
            step(plan)          # then a real forward and backward

        return step_fn, dev

    monkeypatch.setattr(engine, "probe_tools", fake_gpu_tools)
    seen = []
    orig = LMModule.training_step

    def training_step(self, batch, batch_idx):
        seen.append((self.global_step, tuple(batch["input_ids"].shape), self.trainer.accumulate_grad_batches))
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(LMModule, "training_step", training_step)
    args = ["pretrain", "--fasta", str(fasta_small), "--seq-len", "64", "--seq-warmup-start", "32", "--batch-size",
            "4", "--max-steps", "4", "--val-every", "4", "--val-windows", "2", "--accelerator", "cpu",
            "--model-overrides", json.dumps({"d_model": 16, "n_layer": 1}), "-q"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "gpu")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "gpu" / "metrics.json").read_text())
    stages = {p["seq_len"]: p for p in m["stages"]}
    assert set(stages) == {32, 64}
    for L, p in stages.items():
        planned = engine.StagePlanner(arch, lambda _: 4 * 64 // L, device_type="cuda", free_bytes=free).plan(L)
        tried = [mb for sl, mb in probes if sl == L]
        assert tried[0] == planned.micro_batch and len(tried) > 1          # the plan ran out of memory ...
        assert p["micro_batch"] == tried[-1] < planned.micro_batch          # ... the micro-batch that ran
        assert "probed" in p["reason"] and p["measured_bytes"] <= GPU_MEMORY_FRACTION * free
        assert p["micro_batch"] * p["accumulate"] == 4 * 64 // L
        steps = [s for s in seen if s[1][1] == L]
        assert steps and all(s[1][0] == p["micro_batch"] and s[2] == p["accumulate"] for s in steps)
    # on CPU the planner's plan runs as it is: no probe
    monkeypatch.setattr(engine, "device_memory", lambda on_gpu: ("cpu", None))
    probes.clear()
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "cpu")])
    assert res.exit_code == 0, res.output
    assert probes == []
    cpu = json.loads((tmp_path / "cpu" / "metrics.json").read_text())["stages"]
    assert [(p["micro_batch"], p["accumulate"], p["measured_bytes"]) for p in cpu] == [(8, 1, None), (4, 1, None)]


def test_a_probe_that_fits_keeps_the_plan_and_says_so():
    """StagePlanner.probed with the plan itself (the first probe step fitted): the same micro-batches and
    runtime, the measured peak kept, one "seq-len" head in the reason."""
    from test_memory_plan import FakeDevice

    from mamba_genome.train.memory import probe_stage

    arch = MambaConfig.from_preset("1.4m")
    planner = StagePlanner(arch, lambda L: 64, device_type="cuda", free_bytes=80 * GiB)
    plan = planner.plan(1 << 14)
    dev = FakeDevice(arch, capacity=80 * GiB)
    got = planner.probed(plan, probe_stage(plan.memory_plan(), dev.step, arch, plan.batch, free_bytes=80 * GiB,
                                           device_memory=dev))
    assert (got.micro_batch, got.accumulate, got.runtime, got.policy) == (plan.micro_batch, plan.accumulate,
                                                                          plan.runtime, plan.policy)
    assert got.measured_bytes == plan.est_bytes and got.reason.count("seq-len") == 1 and "probed: peak" in got.reason
    assert planner.plan(1 << 14) is got


def test_validation_loads_in_the_main_process(tmp_path, fasta_small):
    """Validation reads a few fixed tiles: worker processes would cost more to start than the reading
    (0.5 s per validation with 8 workers), so only the training loader uses them."""
    from types import SimpleNamespace

    from mamba_genome.data.splits import make_splits
    from mamba_genome.data.store import ingest
    from mamba_genome.train.datamodule import GenomeDataModule
    from mamba_genome.train.schedule import TrainSchedule

    store = ingest(fasta_small, tmp_path / "s", progress=False)
    split = make_splits(store, val_contigs=("c1",))
    dm = GenomeDataModule(store.path, split, TrainSchedule(total_steps=4, final_seq_len=64, lr=1e-3, seq_warmup=False),
                          plan_for=lambda L: SimpleNamespace(micro_batch=2, accumulate=1), val_windows=4, num_workers=3)
    val = dm.val_dataloader()
    assert val.num_workers == 0 and next(iter(val))["input_ids"].shape == (2, 64)
    assert dm._loader(val.dataset, 2, drop_last=False).num_workers == 3   # the training loader's default


@pytest.mark.parametrize("slow_steps", [0, 10, 25])
def test_time_budget_is_not_cut_short_by_slow_first_steps(monkeypatch, slow_steps):
    """--max-time: the first steps compile (1 s each here, then 0.1 s). The fitted step count must use the
    steps since the previous fit, so the run still ends close to the budget (minus the reserve) and never
    past it; fitting on the whole session's average stopped such a run 20 s early."""
    from types import SimpleNamespace

    from mamba_genome.train import callbacks

    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])
    schedule = SimpleNamespace(total_steps=1000)
    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1, world_size=1, should_stop=False)
    budget = callbacks.TimeBudget(schedule, budget_s=100.0, reserve_s=5.0)
    budget.on_train_start(trainer, None)
    while not trainer.should_stop and trainer.global_step < 10_000:
        clock[0] += 1.0 if trainer.global_step < slow_steps else 0.1
        trainer.global_step += 1
        budget.on_train_batch_end(trainer, None, None, None, trainer.global_step - 1)
    assert trainer.should_stop and 92.0 <= clock[0] <= 95.0 + 1e-9, (slow_steps, clock[0], trainer.global_step)
    assert schedule.total_steps == trainer.global_step


def _pretrain_small(fasta, out, *extra):
    return CliRunner().invoke(main, ["pretrain", "--fasta", str(fasta), "--seq-len", "64", "--batch-size", "2",
                                     "--max-steps", "6", "--val-every", "3", "--val-windows", "2", "--accelerator",
                                     "cpu", "--model-overrides", json.dumps({"d_model": 16, "n_layer": 1}),
                                     "--out", str(out), "-q", *extra])


def test_export_time_counts_as_validation_and_files_are_complete(tmp_path, monkeypatch, fasta_small):
    """The export after a validation is part of that validation's share of the clock (the schedule
    spaces validations by it), and the files written in the background are complete when the
    command returns; training forks loader workers in between."""
    import time

    from mamba_genome import checkpoint
    from mamba_genome.train import callbacks, engine

    orig_weights = checkpoint.host_weights

    def slow_weights(state):                     # the part of the export on the training thread
        time.sleep(0.3)
        return orig_weights(state)

    monkeypatch.setattr(callbacks, "host_weights", slow_weights)
    took = []
    orig_end = engine.ValidationSchedule.on_validation_end

    def on_validation_end(self, trainer, pl_module):
        before = self.val_seconds
        orig_end(self, trainer, pl_module)
        took.append(self.val_seconds - before)

    monkeypatch.setattr(engine.ValidationSchedule, "on_validation_end", on_validation_end)
    out = tmp_path / "run"
    res = _pretrain_small(fasta_small, out, "--num-workers", "2")
    assert res.exit_code == 0, res.output
    assert len(took) == 2 and min(took) >= 0.3
    ckpt = torch.load(out / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 6
    model, _ = load_model(out / "last")
    sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert json.loads((out / "last" / "config.json").read_text())["extra"]["step"] == 6


def test_a_failed_background_write_fails_the_run_in_one_line(tmp_path, monkeypatch, fasta_small):
    from mamba_genome.train import callbacks

    def full_disk(weights, meta, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(callbacks, "write_model_dir", full_disk)
    out = tmp_path / "run"
    res = _pretrain_small(fasta_small, out)
    assert res.exit_code != 0
    assert "No space left on device" in res.output and "Traceback" not in res.output
    assert not (out / "metrics.json").exists()
