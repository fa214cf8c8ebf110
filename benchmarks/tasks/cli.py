"""Command line of the task suite: ``prepare`` the windows, ``run`` the classifiers, ``report`` the table.

    bash benchmarks/tasks/build.sh runs/tasks           # a clean machine: Debian packages, then prepare
    python -m benchmarks.tasks prepare --data /work/shared/data --out runs/tasks
    python -m benchmarks.tasks run --tasks-dir runs/tasks --stages kmer,cnn
    python -m benchmarks.tasks run --tasks-dir runs/tasks --stages probe,finetune --model runs/pretrain_1.4m
    python -m benchmarks.tasks gpu --tasks-dir runs/tasks --budget 450     # on a GPU: every model column
    python -m benchmarks.tasks report

``run`` merges its results into ``--results`` (JSON; stages already there from other runs are
kept, so the CPU baselines and a later GPU probe/fine-tune land in one file) and rewrites the
markdown table beside it. Every stage scores the same test windows.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from mamba_genome.errors import UserError
from mamba_genome.model.classifier import POOLINGS

from . import TASKS
from .common import DEBIAN_ROOT, DEFAULT_DATA, WindowSet, resolve_data

RESULTS = Path(__file__).resolve().parent / "results" / "tasks.json"
STAGES = ("kmer", "cnn", "probe", "finetune")


def _names(arg: str) -> list[str]:
    names = list(TASKS) if arg == "all" else [t.strip() for t in arg.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise UserError(f"--tasks: unknown task '{unknown[0]}' (known: {', '.join(TASKS)})")
    return names


def cmd_prepare(a) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    a.data = resolve_data(a.data, out)
    print(f"genomes: {a.data}" + (f" -> {DEBIAN_ROOT}" if a.data == out / "_data" else ""), flush=True)
    for name in _names(a.tasks):
        t0 = time.perf_counter()
        kw = {"gff": a.umaydis_gff} if name in ("coding_umaydis", "splice_donor") and a.umaydis_gff else {}
        if name in ("species", "great_apes") and a.apes_maf:
            kw = {"maf": a.apes_maf}
        ws = TASKS[name](Path(a.data), out, seed=a.seed, **kw)
        d = ws.save(out)
        print(ws.describe())
        print(f"  wrote {d} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not a.no_pretrain_fasta:
        from .pretraining import GROUPS, write_genome_parts

        wanted = {p for g in GROUPS.values() if set(g["tasks"]) & set(_names(a.tasks)) for p in g.get("parts", ())}
        write_genome_parts(Path(a.data), out, maf=a.apes_maf, parts=[p for p in ("umaydis", "bacteria", "apes_human",
                                                                               "apes_other") if p in wanted])
    return 0


def _machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"tasks": {}}


def write_results(path: Path, results: dict) -> None:
    from .report import markdown

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(markdown(results))


def cmd_run(a) -> int:
    from . import baselines

    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UserError(f"--stages: unknown stage '{bad[0]}' (known: {', '.join(STAGES)})")
    if ("probe" in stages) and not a.model:
        raise UserError("--stages probe needs --model (a pretrained model or run directory)")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    results_path = Path(a.results)
    results = load_results(results_path)
    for name in _names(a.tasks):
        task_dir = Path(a.tasks_dir) / name
        ws = WindowSet.load(task_dir)
        print(ws.describe(), flush=True)
        entry = results["tasks"].setdefault(name, {})
        entry.update({"labels": ws.labels, "seq_len": ws.seq_len, "metric": ws.metric, "windows": ws.counts(),
                      "majority_rate": baselines.majority(ws), "provenance": ws.provenance})
        runs = entry.setdefault("results", {})
        for stage in stages:
            log = (lambda msg: print(msg, flush=True)) if a.verbose else (lambda msg: None)
            if stage == "kmer":
                r = baselines.kmer_stage(ws, seed=a.seed, log=log)
            elif stage == "cnn":
                r = baselines.cnn_stage(ws, seed=a.seed, max_epochs=a.cnn_epochs, max_time_s=a.cnn_time, log=log)
            elif stage == "probe":
                layers = [int(x) for x in a.probe_layers.split(",")] if a.probe_layers else None
                r = baselines.probe_stage(ws, a.model, layers=layers, max_train=a.probe_max_train or None,
                                          seed=a.seed, log=log)
            else:
                r = baselines.finetune_stage(ws, task_dir, Path(a.runs_dir) / f"finetune_{name}", model_path=a.model,
                                             preset=a.preset, max_steps=a.finetune_steps, batch_size=a.batch_size,
                                             max_time_s=a.finetune_time, max_epochs=a.finetune_epochs,
                                             lr=a.finetune_lr, seed=a.seed, strands=a.strands,
                                             pooling=a.pooling, log=log)
            r.update({"machine": _machine(), "date": datetime.date.today().isoformat(),
                      "command": " ".join(["python -m benchmarks.tasks", *sys.argv[1:]]) if a.argv is None
                      else "python -m benchmarks.tasks " + " ".join(a.argv)})
            runs[stage] = r
            key = "auroc" if ws.metric == "auroc" and "auroc" in r else "accuracy"
            print(f"{name} {stage}: test {key} {r[key]:.3f} [{r[key + '_ci95'][0]:.3f}, {r[key + '_ci95'][1]:.3f}], "
                  f"accuracy {r['accuracy']:.3f}, {r['seconds']} s ({r['method']})", flush=True)
            write_results(results_path, results)
    print(f"wrote {results_path} and {results_path.with_suffix('.md')}")
    return 0


def cmd_merge(a) -> int:
    """Stages of several results files (e.g. two processes' or a CPU and a GPU run) into ``--results``."""
    results = load_results(Path(a.results))
    for path in a.inputs:
        other = load_results(Path(path))
        results.setdefault("pretraining", {}).update(other.get("pretraining", {}))
        if not results["pretraining"]:
            results.pop("pretraining")
        for name, t in other["tasks"].items():
            entry = results["tasks"].setdefault(name, {})
            runs = {**entry.get("results", {}), **t.get("results", {})}
            entry.update(t)
            entry["results"] = runs
    write_results(Path(a.results), results)
    print(f"wrote {a.results} and {Path(a.results).with_suffix('.md')}")
    return 0


def cmd_gpu(a) -> int:
    from .gpu import GpuPlan, run_gpu

    plan = GpuPlan(budget_s=a.budget, pretrain_s=a.pretrain_time or round(0.31 * a.budget), finetune_max_s=a.finetune_max_time, preset=a.preset, lr=a.finetune_lr,
                   pretrain_batch_tokens=a.pretrain_batch_tokens, strands=a.strands, pooling=a.pooling,
                   ablate=tuple(_names(a.ablate)) if a.ablate else (), ablate_pooling=a.ablate_pooling)
    out = Path(a.out)
    return run_gpu(Path(a.tasks_dir), out, out / "tasks_gpu.json", Path(a.work or Path(a.tasks_dir) / "gpu"),
                   _names(a.tasks), [s.strip() for s in a.stages.split(",") if s.strip()], plan, model=a.model,
                   dry_run=a.dry_run)


def cmd_report(a) -> int:
    from .report import markdown

    print(markdown(load_results(Path(a.results))), end="")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tasks", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the tasks' windows from the genomes")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="folder with ecoli/, saureus/, vcholerae/, umaydis/, or 'debian': the files of `apt-get install "
                        "ragout-examples maffilter-examples` (default: %(default)s, else 'debian')")
    p.add_argument("--out", required=True, help="where the task folders go")
    p.add_argument("--tasks", default="all", help=f"comma-separated subset of: {', '.join(TASKS)}")
    p.add_argument("--umaydis-gff", default=None,
                   help="U. maydis gene models (default: /usr/share/doc/maffilter/examples/Umaydis/Umaydis.gff3.gz "
                        "of `apt-get install maffilter-examples`)")
    p.add_argument("--apes-maf", default=None,
                   help="the 4-ape EPO alignment of chr22 (default: /usr/share/doc/maffilter/examples/Gorilla/"
                        "Compara.epo_5_catarrhini_hsap-projected.chr22.subset.nogap.cleaned_aln.maf.gz)")
    p.add_argument("--no-pretrain-fasta", action="store_true",
                   help="skip the unlabelled pretraining FASTAs of the task groups (<out>/pretrain/)")
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="score classifiers on prepared tasks")
    r.add_argument("--tasks-dir", required=True, help="the --out of prepare")
    r.add_argument("--tasks", default="all")
    r.add_argument("--stages", default="kmer,cnn", help=f"comma-separated subset of: {', '.join(STAGES)}")
    r.add_argument("--model", default=None, help="pretrained model/run directory for probe and finetune")
    r.add_argument("--probe-layers", default=None,
                   help="comma-separated blocks to probe mean-pooled (default: 1/3, 1/2, 2/3 of the way and the last)")
    r.add_argument("--probe-max-train", type=int, default=4000, help="training windows embedded for the probe (0: all)")
    r.add_argument("--preset", default="tiny", help="finetune from scratch at this preset when --model is not given")
    r.add_argument("--finetune-steps", type=int, default=None,
                   help="most fine-tuning steps (default: --finetune-epochs passes over the train windows)")
    r.add_argument("--finetune-epochs", type=int, default=30, help="most passes over the train windows")
    r.add_argument("--finetune-time", type=float, default=None, help="seconds per fine-tuning run (cap)")
    r.add_argument("--finetune-lr", type=float, default=1e-3, help="peak fine-tuning learning rate")
    r.add_argument("--batch-size", type=int, default=None,
                   help="fine-tuning batch size (default: 64 up to 1 kbp, 32 up to 4 kbp, else 16)")
    r.add_argument("--strands", choices=("fwd", "both"), default="both",
                   help="fine-tuning classifier: forward + reverse-complement pass (both) or forward only")
    r.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="fine-tuning classifier's pooling (default: per task, baselines.POOLING_BY_TASK, else mean)")
    r.add_argument("--runs-dir", default="runs/tasks_runs", help="where fine-tuning run directories go")
    r.add_argument("--cnn-epochs", type=int, default=12, help="most CNN epochs (early stopping on val, patience 3)")
    r.add_argument("--cnn-time", type=float, default=None, help="seconds of CNN training per task (cap)")
    r.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared CPU more threads spin and run slower)")
    r.add_argument("--results", default=str(RESULTS), help="JSON to merge results into (default: %(default)s)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("-v", "--verbose", action="store_true", help="print the grid / epochs")
    g = sub.add_parser("gpu", help="pretrain per task group, then probe + fine-tune every task, in one time budget")
    g.add_argument("--tasks-dir", required=True, help="the --out of prepare")
    g.add_argument("--tasks", default="all")
    g.add_argument("--stages", default="pretrain,probe,finetune",
                   help="comma-separated subset of: pretrain, probe, finetune (without pretrain: the LMs of an "
                        "earlier call in --work, or --model)")
    g.add_argument("--model", default=None, help="one model for every task instead of pretraining per group")
    g.add_argument("--out", default=os.environ.get("OUT") or "runs/tasks_gpu",
                   help="results JSON/markdown, logs and small run files (default: $OUT, else %(default)s)")
    g.add_argument("--work", default=None, help="LMs and fine-tuning runs (default: <tasks-dir>/gpu)")
    g.add_argument("--budget", type=float, default=450.0, help="seconds for the whole call (default: %(default)s)")
    g.add_argument("--pretrain-time", type=float, default=None,
                   help="seconds of pretraining per group, all groups at once (default: 31%% of --budget, 140 s of 450)")
    g.add_argument("--finetune-max-time", type=float, default=240.0, help="most seconds of fine-tuning per task")
    g.add_argument("--finetune-lr", type=float, default=1e-3, help="peak fine-tuning learning rate")
    g.add_argument("--preset", default="1.4m")
    g.add_argument("--pretrain-batch-tokens", type=int, default=1 << 18, help="tokens per pretraining step")
    g.add_argument("--strands", choices=("fwd", "both"), default="both",
                   help="fine-tuning classifier: both = forward + reverse-complement pass (default), fwd = forward only")
    g.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="fine-tuning classifier's pooling (default: per task, baselines.POOLING_BY_TASK, else mean)")
    g.add_argument("--ablate", default="", help="comma-separated tasks also fine-tuned with --strands fwd "
                                                "(results stage finetune_fwd, in the JSON, not the table)")
    g.add_argument("--ablate-pooling", choices=POOLINGS, default=None,
                   help="the --ablate tasks' second fine-tune keeps the strands and pools so instead (results stage "
                        "finetune_<pooling>)")
    g.add_argument("--dry-run", action="store_true", help="write the pretraining FASTAs, print the plan; run nothing")
    q = sub.add_parser("report", help="print the markdown table of --results")
    q.add_argument("--results", default=str(RESULTS))
    m = sub.add_parser("merge", help="merge the stages of other results files into --results")
    m.add_argument("inputs", nargs="+", help="results JSON files (later ones win per task and stage)")
    m.add_argument("--results", default=str(RESULTS))
    a = ap.parse_args(argv)
    a.argv = list(argv) if argv is not None else None
    try:
        return {"prepare": cmd_prepare, "run": cmd_run, "report": cmd_report, "merge": cmd_merge,
                "gpu": cmd_gpu}[a.cmd](a)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["main"]
