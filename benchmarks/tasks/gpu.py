"""``python -m benchmarks.tasks gpu``: the model columns of every task in one GPU call, within a time budget.

1. **Pretrain** one LM per task group (:data:`~benchmarks.tasks.pretraining.GROUPS`) on the group's
   own unlabelled training sequence, all groups at once (``mamba-genome pretrain``, one process
   each, ``--max-time`` = ``pretrain_s``): the paper's recipe of pretraining on the genome first.
2. As each LM is ready, its tasks start: one **probe** process per group (``python -m
   benchmarks.tasks run --stages probe``: frozen embeddings, forward + reverse complement, best
   layer / pool / view on val) and one **fine-tuning** process per task (``mamba-genome
   finetune``, settings from :func:`~benchmarks.tasks.baselines.finetune_plan`, ``--max-time``
   sized so every run ends before the budget).
3. After every finished stage the results JSON (and its markdown table) is rewritten, so a run
   cut short still leaves what it finished; at ``budget_s`` - ``grace_s`` what still runs gets
   SIGTERM (a fine-tune then saves ``last.ckpt``), and the call returns by ``budget_s``.

Everything goes through the command line of ``mamba-genome`` and the stable
``mamba_genome.load(...).embed`` API, so this file does not depend on the library's internals.
Every line it prints starts with the seconds since it started. Logs of the child processes and
each run's small outputs (metrics.json, curves.csv) are copied under ``--out``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mamba_genome.errors import UserError

from .common import WindowSet
from .pretraining import GROUPS, group_of, held_out_bp, write_group_fasta

STAGES = ("pretrain", "probe", "finetune")


@dataclass
class GpuPlan:
    """Time budget (seconds from the start of the call) and model settings of one ``gpu`` call."""

    budget_s: float = 450.0  # everything, results written, by then
    pretrain_s: float = 140.0  # --max-time of each group's pretraining (all groups run at once)
    finetune_max_s: float = 240.0  # no fine-tune trains longer than this
    finetune_setup_s: float = 60.0  # a fine-tune's start-up (imports, token stores, kernels) and its test pass + writes
    grace_s: float = 20.0  # SIGTERM what still runs this long before budget_s
    preset: str = "1.4m"
    pretrain_batch_tokens: int = 1 << 18  # tokens per pretraining step (4 groups or more share the GPU)
    probe_max_train: int = 4000  # training windows embedded per task for the probe
    lr: float = 1e-3  # fine-tuning peak LR
    strands: str = "both"  # fine-tuning classifier: forward + reverse-complement pass ("fwd": forward only)
    pooling: str | None = None  # fine-tuning classifier's pooling; None: per task (baselines.task_pooling)
    ablate: tuple = ()  # tasks also fine-tuned with --strands fwd, recorded as stage "finetune_fwd" (not tabled)
    ablate_pooling: str | None = None  # with it, the ablation keeps the strands and pools so: stage "finetune_<it>"

    def __post_init__(self):
        if not self.budget_s > self.grace_s + self.finetune_setup_s:
            raise UserError(f"--budget must exceed {self.grace_s + self.finetune_setup_s:.0f} s, got {self.budget_s}")


@dataclass
class Job:
    kind: str  # pretrain | probe | finetune
    name: str  # group or task
    proc: subprocess.Popen
    log: Path
    started: float
    info: dict = field(default_factory=dict)


class Suite:
    """Runs the stages as child processes and keeps the results file current."""

    def __init__(self, tasks_dir: Path, out: Path, results: Path, work: Path, tasks: list[str], stages: list[str],
                 plan: GpuPlan, model: str | None = None, python: str = sys.executable):
        self.tasks_dir, self.out, self.results_path, self.work = Path(tasks_dir), Path(out), Path(results), Path(work)
        self.tasks, self.stages, self.plan, self.model, self.py = tasks, stages, plan, model, python
        self.t0 = time.monotonic()
        self.jobs: list[Job] = []
        self.failed: list[str] = []
        from .cli import load_results

        self.results = load_results(self.results_path)

    # ---------------------------------------------------------------- helpers
    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.now():6.1f}s] {msg}", flush=True)

    def _spawn(self, kind: str, name: str, cmd: list[str], **info) -> Job:
        logf = self.out / "logs" / f"{kind}_{name}.log"
        logf.parent.mkdir(parents=True, exist_ok=True)
        fh = open(logf, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        fh.close()
        job = Job(kind, name, proc, logf, self.now(), dict(info))
        self.jobs.append(job)
        return job

    def _tail(self, job: Job, n: int = 600) -> str:
        try:
            return job.log.read_text()[-n:].strip().replace("\n", " | ")
        except OSError:
            return ""

    def _save(self) -> None:
        from .cli import write_results

        write_results(self.results_path, self.results)

    def _entry(self, ws: WindowSet) -> dict:
        from .baselines import majority

        entry = self.results["tasks"].setdefault(ws.name, {})
        entry.update({"labels": ws.labels, "seq_len": ws.seq_len, "metric": ws.metric, "windows": ws.counts(),
                      "majority_rate": majority(ws), "provenance": ws.provenance})
        entry.setdefault("results", {})
        return entry

    def _record(self, task: str, stage: str, r: dict, command: str) -> None:
        import datetime

        from .cli import _machine

        ws = WindowSet.load(self.tasks_dir / task)
        r.update({"machine": _machine(), "date": datetime.date.today().isoformat(), "command": command})
        self._entry(ws)["results"][stage] = r
        self._save()
        key = "auroc" if ws.metric == "auroc" and "auroc" in r else "accuracy"
        flag = f", ONE CLASS ({r['max_predicted_share']:.0%})" if r.get("one_class") else ""
        self.log(f"{task} {stage}: test {key} {r[key]:.3f} [{r[key + '_ci95'][0]:.3f}, {r[key + '_ci95'][1]:.3f}], "
                 f"accuracy {r['accuracy']:.3f}, majority {self.results['tasks'][task]['majority_rate']:.3f}{flag} "
                 f"({r['method']})")

    # ----------------------------------------------------------------- stages
    def lm_dir(self, group: str) -> Path:
        return self.work / f"lm_{group}"

    def start_pretrain(self, group: str) -> None:
        spec = GROUPS[group]
        fasta = write_group_fasta(group, self.tasks_dir, self.work / "pretrain" / f"{group}.fa.gz")
        seq_len = spec["seq_len"]
        while seq_len > 64 and seq_len > held_out_bp(fasta):  # tiny test sets: a window must fit lm_val
            seq_len //= 2
        argv = [self.py, "-m", "mamba_genome", "pretrain", "--fasta", str(fasta), "--preset", self.plan.preset,
                "--seq-len", str(seq_len), "--batch-size", str(max(1, self.plan.pretrain_batch_tokens // seq_len)),
                "--max-time", f"{int(self.plan.pretrain_s)}s", "--val-contigs", "lm_val", "--test-contigs", "lm_test",
                "--val-windows", "64", "--num-workers", "2", "--out", str(self.lm_dir(group)), "--force", "-q"]
        self._spawn("pretrain", group, argv)
        mine = ", ".join(t for t in spec["tasks"] if t in self.tasks)
        self.log(f"pretrain {group}: started ({fasta.stat().st_size / 1e6:.1f} MB FASTA, {self.plan.preset}, "
                 f"{seq_len} bp windows, {self.plan.pretrain_s:.0f} s) for {mine}")

    def start_tasks(self, group: str, model: str | None) -> None:
        """The probe of the group's tasks and a fine-tune per task, from ``model`` (None: from scratch, no probe)."""
        mine = [t for t in GROUPS[group]["tasks"] if t in self.tasks]
        if "probe" in self.stages and mine and model:
            part = self.out / "parts" / f"probe_{group}.json"
            part.unlink(missing_ok=True)
            argv = [self.py, "-m", "benchmarks.tasks", "run", "--tasks-dir", str(self.tasks_dir), "--tasks",
                    ",".join(mine), "--stages", "probe", "--model", model, "--probe-max-train",
                    str(self.plan.probe_max_train), "--threads", "2", "--results", str(part), "-v"]
            self._spawn("probe", group, argv, part=part)
            self.log(f"probe {group}: started ({', '.join(mine)})")
        if "finetune" in self.stages:
            runs = [(t, "finetune", self.plan.strands, self.plan.pooling) for t in mine]
            ab = self.plan.ablate_pooling
            if ab:
                runs += [(t, f"finetune_{ab}", self.plan.strands, ab) for t in mine if t in self.plan.ablate]
            else:
                runs += [(t, "finetune_fwd", "fwd", self.plan.pooling) for t in mine
                         if t in self.plan.ablate and self.plan.strands != "fwd"]
            for t, stage, strands, pooling in runs:
                try:
                    self.start_finetune(t, model, stage=stage, strands=strands, pooling=pooling)
                except Exception as exc:
                    self.failed.append(f"{stage} {t}")
                    self.log(f"{t} {stage}: cannot start: {type(exc).__name__}: {exc}")

    def start_finetune(self, task: str, model: str | None, stage: str = "finetune", strands: str | None = None,
                       pooling: str | None = None) -> None:
        """One ``mamba-genome finetune`` of ``task``; ``stage`` names its results entry and run directory."""
        from .baselines import finetune_argv, finetune_plan

        ws = WindowSet.load(self.tasks_dir / task)
        left = self.plan.budget_s - self.plan.grace_s - self.now() - self.plan.finetune_setup_s
        if left < 10:
            self.log(f"{task} {stage}: skipped, {left:.0f} s left of the budget")
            return
        plan = finetune_plan(ws, max_time_s=min(self.plan.finetune_max_s, left), lr=self.plan.lr,
                             strands=strands or self.plan.strands, pooling=pooling or self.plan.pooling)
        run_dir = self.work / stage / task
        argv = finetune_argv(ws, self.tasks_dir / task, run_dir, plan, model_path=model, preset=self.plan.preset)
        self._spawn(stage, task, [self.py, "-m", "mamba_genome", *argv], plan=plan, run=run_dir, model=model,
                    argv=argv)
        self.log(f"{task} {stage}: started (batch {plan.batch_size}, <= {plan.max_steps} steps, "
                 f"validation every {plan.val_every}, {plan.pooling} pooling, strands {plan.strands}, "
                 f"rc-prob {plan.rc_prob:g}, "
                 f"{plan.max_time_s:.0f} s)")

    # ---------------------------------------------------------------- finish
    def finished(self, job: Job) -> None:
        rc = job.proc.returncode
        took = self.now() - job.started
        if job.kind == "pretrain":
            m = self.lm_dir(job.name) / "metrics.json"
            if rc != 0 or not (self.lm_dir(job.name) / "best").is_dir():
                self.failed.append(f"pretrain {job.name}")
                self.log(f"pretrain {job.name}: FAILED (exit {rc}, {took:.0f} s): {self._tail(job)}; its tasks are "
                         f"fine-tuned from scratch ({self.plan.preset}) instead, with no probe")
                self.start_tasks(job.name, None)
                return
            self._keep(self.lm_dir(job.name), f"lm_{job.name}", ("metrics.json", "args.json"))
            msg = ""
            try:
                d = json.loads(m.read_text())
                msg = (f", {d['steps']:,} steps, {d['tokens_seen'] / 1e6:.0f} M tokens, "
                       f"{d['tokens_per_second'] / 1e6:.2f} M tokens/s, val {d['val_bits_per_base']:.3f} bits/base")
                self.results.setdefault("pretraining", {})[job.name] = {
                    k: d.get(k) for k in ("preset", "seq_len", "steps", "tokens_seen", "tokens_per_second",
                                          "train_seconds", "wall_seconds", "val_bits_per_base", "data_source")}
                self.results["pretraining"][job.name]["tasks"] = GROUPS[job.name]["tasks"]
                self._save()
            except (OSError, ValueError, TypeError, KeyError):
                pass
            self.log(f"pretrain {job.name}: done in {took:.0f} s{msg}")
            self.start_tasks(job.name, str(self.lm_dir(job.name)))
        elif job.kind == "probe":
            part = job.info["part"]
            if part.is_file():
                from .cli import load_results

                for task, t in load_results(part)["tasks"].items():
                    if "probe" in t.get("results", {}):
                        self._entry(WindowSet.load(self.tasks_dir / task))["results"]["probe"] = t["results"]["probe"]
                        r = t["results"]["probe"]
                        self.log(f"{task} probe: test accuracy {r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, "
                                 f"{r['accuracy_ci95'][1]:.3f}]" + (f", auroc {r['auroc']:.3f}" if "auroc" in r else "")
                                 + (f", ONE CLASS ({r['max_predicted_share']:.0%})" if r.get("one_class") else "")
                                 + f" ({r['method']}, {r['seconds']} s)")
                self._save()
            if rc != 0:
                self.failed.append(f"probe {job.name}")
                self.log(f"probe {job.name}: FAILED (exit {rc}, {took:.0f} s): {self._tail(job)}")
        else:
            from .baselines import finetune_result

            run, stage = job.info["run"], job.kind  # finetune | finetune_fwd | finetune_<pooling>
            self._keep(run, f"{stage}_{job.name}", ("metrics.json", "curves.csv", "confusion_matrix.tsv"))
            if rc != 0 or not (run / "metrics.json").is_file():
                self.failed.append(f"{stage} {job.name}")
                self.log(f"{job.name} {stage}: FAILED (exit {rc}, {took:.0f} s): {self._tail(job)}")
                return
            ws = WindowSet.load(self.tasks_dir / job.name)
            try:
                r = finetune_result(ws, run, job.info["plan"], job.info["model"], preset=self.plan.preset)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                self.failed.append(f"{stage} {job.name}")
                self.log(f"{job.name} {stage}: could not score the run: {exc}")
                return
            r["seconds"] = round(took, 1)
            self._record(job.name, stage, r, "mamba-genome " + " ".join(job.info["argv"]))

    def _keep(self, run: Path, name: str, files) -> None:
        for f in files:
            if (run / f).is_file():
                (self.out / "runs" / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / f, self.out / "runs" / name / f)

    def dry_run(self) -> int:
        """Write the group FASTAs and print the commands and plans; start nothing."""
        from .baselines import finetune_plan

        for g in [g for g in GROUPS if set(GROUPS[g]["tasks"]) & set(self.tasks)]:
            if "pretrain" in self.stages:
                fasta = write_group_fasta(g, self.tasks_dir, self.work / "pretrain" / f"{g}.fa.gz")
                self.log(f"pretrain {g}: {fasta} ({fasta.stat().st_size / 1e6:.1f} MB, lm_val "
                         f"{held_out_bp(fasta):,} bp), {self.plan.pretrain_s:.0f} s")
            for t in [t for t in GROUPS[g]["tasks"] if t in self.tasks]:
                ws = WindowSet.load(self.tasks_dir / t)
                p = finetune_plan(ws, max_time_s=self.plan.finetune_max_s, lr=self.plan.lr, strands=self.plan.strands,
                                  pooling=self.plan.pooling)
                n = int((ws.split == "train").sum())
                self.log(f"{t}: {n:,} train windows of {ws.seq_len:,} bp; finetune batch {p.batch_size}, "
                         f"<= {p.max_steps:,} steps ({p.max_steps * p.batch_size / max(n, 1):.0f} passes), "
                         f"validation every {p.val_every}, warmup {p.warmup_steps}, {p.pooling} pooling, "
                         f"strands {p.strands}, rc-prob "
                         f"{p.rc_prob:g}, <= {p.max_time_s:.0f} s" + (
                                 "" if t not in self.plan.ablate else f", + a --pooling {self.plan.ablate_pooling} run"
                                 if self.plan.ablate_pooling else ", + a --strands fwd run"))
        return 0

    def run(self) -> int:
        groups = [g for g in GROUPS if set(GROUPS[g]["tasks"]) & set(self.tasks)]
        self.log(f"tasks: {', '.join(self.tasks)}; stages: {', '.join(self.stages)}; groups: {', '.join(groups)}; "
                 f"budget {self.plan.budget_s:.0f} s")
        for g in groups:
            try:
                if "pretrain" in self.stages:
                    try:
                        self.start_pretrain(g)
                    except UserError as exc:  # e.g. prepared without the pretraining FASTAs
                        self.failed.append(f"pretrain {g}")
                        self.log(f"pretrain {g}: cannot start: {exc}; its tasks are fine-tuned from scratch")
                        self.start_tasks(g, None)
                    continue
                model = self.model or str(self.lm_dir(g))
                if not Path(model).exists():
                    self.failed.append(f"model {g}")
                    self.log(f"{g}: no model at {model} (give --model or include the pretrain stage)")
                    continue
                self.start_tasks(g, model)
            except Exception as exc:  # e.g. a missing pretraining FASTA: the other groups still run
                self.failed.append(f"group {g}")
                self.log(f"{g}: cannot start: {type(exc).__name__}: {exc}")
        terminated, done = False, set()
        while len(done) < len(self.jobs):
            for j in list(self.jobs):
                if id(j) not in done and j.proc.poll() is not None:
                    done.add(id(j))
                    try:
                        self.finished(j)
                    except Exception as exc:  # one stage's bug must not stop the others (one GPU call)
                        self.failed.append(f"{j.kind} {j.name}")
                        self.log(f"{j.kind} {j.name}: error after it ended: {type(exc).__name__}: {exc}")
            if not terminated and self.now() > self.plan.budget_s - self.plan.grace_s:
                terminated = True
                for j in self.jobs:
                    if j.proc.poll() is None:
                        self.log(f"{j.kind} {j.name}: over the budget, SIGTERM")
                        os.killpg(j.proc.pid, signal.SIGTERM)
            if terminated and self.now() > self.plan.budget_s - 3:
                for j in self.jobs:
                    if j.proc.poll() is None:
                        os.killpg(j.proc.pid, signal.SIGKILL)
            time.sleep(0.5)
        self._save()
        self.log(f"wrote {self.results_path} and {self.results_path.with_suffix('.md')}"
                 + (f"; failed: {', '.join(self.failed)}" if self.failed else ""))
        return 1 if self.failed else 0


def run_gpu(tasks_dir, out, results, work, tasks, stages, plan: GpuPlan, model=None, dry_run: bool = False) -> int:
    """Entry point of ``python -m benchmarks.tasks gpu`` (see the module docstring)."""
    missing = [t for t in tasks if not (Path(tasks_dir) / t / "windows.npz").is_file()]
    if missing:
        raise UserError(f"{tasks_dir}: task {missing[0]} is not prepared; run `python -m benchmarks.tasks prepare` "
                        "on a CPU machine first")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UserError(f"--stages: unknown stage '{bad[0]}' (known: {', '.join(STAGES)})")
    for t in tasks:
        group_of(t)
    suite = Suite(tasks_dir, out, results, work, tasks, stages, plan, model=model)
    return suite.dry_run() if dry_run else suite.run()


__all__ = ["GpuPlan", "run_gpu", "STAGES"]
