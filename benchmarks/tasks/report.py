"""The suite's markdown table (for BENCHMARKS.md) from its results JSON.

One row per task: classes, window length, train/val/test windows, the majority-class rate, then
each classifier's headline metric with its 95% interval (AUROC for binary gene tasks, accuracy
otherwise; accuracy is always in the JSON). A cell is marked **one class** when that classifier
predicted one class for more than 90% of the test windows, and a CNN cell says so when training
hit its epoch cap before early stopping ended it.
"""
from __future__ import annotations

from .metrics import ONE_CLASS_SHARE

COLUMNS = (("kmer", "k-mer LR (k on val)"), ("cnn", "CNN"), ("probe", "frozen probe"), ("finetune", "fine-tuned"))


def _cell(r: dict | None, metric: str) -> str:
    if r is None:
        return "not run"
    key = metric if metric in r else "accuracy"
    lo, hi = r[f"{key}_ci95"]
    s = f"{r[key]:.3f} [{lo:.3f}, {hi:.3f}]"
    if key != "accuracy":
        s += f" (acc {r['accuracy']:.3f})"
    if "k" in r.get("chosen", {}):
        s += f" k={r['chosen']['k']}"
    if "layer" in r.get("chosen", {}):
        s += f" L{r['chosen']['layer']}/{r['chosen']['pool']}" + (f"/{r['chosen']['view']}" if "view" in r["chosen"] else "")
    if r.get("steps") is not None and "plan" in r:
        s += f" ({r['steps']:,} steps)"
    if "curve" in r and r.get("stopped_by", "") == "time":
        s += f" (time cap after {r['epochs_run']} epochs, not early-stopped)"
    elif "curve" in r and r["epochs_run"] - 1 - r["chosen"]["epoch"] < r.get("patience", 3):
        s += f" (epoch cap {r['epochs_run']}, not early-stopped)"
    if r.get("one_class"):
        s += f" **one class {r['max_predicted_share']:.0%}**"
    return s


def markdown(results: dict) -> str:
    lines = ["| task | classes | bp | windows train/val/test | metric | majority | "
             + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    machines = set()
    from . import TASKS

    tasks = results.get("tasks", {})
    for name in [n for n in TASKS if n in tasks] + [n for n in tasks if n not in TASKS]:
        t = tasks[name]
        n = {s: sum(t["windows"][s].values()) for s in ("train", "val", "test")}
        runs = t.get("results", {})
        machines |= {f"{k}: {r['machine']}, {r['date']}" for k, r in runs.items()}
        lines.append(f"| {name} | {len(t['labels'])} | {t['seq_len']:,} | {n['train']:,}/{n['val']:,}/{n['test']:,} | "
                     f"{t['metric']} | {t['majority_rate']:.3f} | "
                     + " | ".join(_cell(runs.get(k), t["metric"]) for k, _ in COLUMNS) + " |")
    lines += ["", f"95% intervals: Wilson for accuracy, bootstrap (1,000) for AUROC. **one class**: predicted one "
              f"class for > {ONE_CLASS_SHARE:.0%} of test windows. Every column scores the same test windows, made by "
              f"`python -m benchmarks.tasks prepare --data /work/shared/data` (seed 0; the tasks are described in "
              f"benchmarks/tasks/__init__.py). Measured: {'; '.join(sorted(machines)) or 'nothing yet'}."]
    return "\n".join(lines) + "\n"
