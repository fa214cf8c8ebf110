"""A CPU-sized comparison of the classifier's poolings on prepared task windows, at equal steps.

Not part of the suite's table: a quick way to choose :class:`~benchmarks.tasks.baselines.FinetunePlan`'s
``pooling`` without a GPU. For each pooling (and LR), a classifier from scratch (``tiny`` preset,
overridable width/depth) is trained on the task's train windows for the same number of steps
(AdamW through :func:`mamba_genome.model.lm.param_groups`, linear warmup + cosine decay as in
``finetune``, class-balanced batches, no reverse-complement augmentation on the oriented tasks),
validated every ``--val-every`` steps; the best-on-val state scores the test windows. Prints one
TSV row per run (val/test AUROC or accuracy, seconds)::

    nice -n 10 python -m benchmarks.tasks.pooling_sweep --tasks-dir runs/tasks --task splice_donor \\
        --poolings mean,max,attention,meanmax --steps 300 --lr 1e-3
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from mamba_genome.model.classifier import POOLINGS, MambaClassifier
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import param_groups
from mamba_genome.train.schedule import warmup_cosine

from .baselines import ORIENTED
from .common import WindowSet
from .metrics import auroc


def _rc(x: torch.Tensor) -> torch.Tensor:
    from mamba_genome.model.classifier import reverse_complement_rows
    return reverse_complement_rows(x)


def evaluate(model, x: torch.Tensor, y: np.ndarray, metric: str, batch: int = 128) -> float:
    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(model(x[i:i + batch]), -1) for i in range(0, len(x), batch)]).numpy()
    model.train()
    if metric == "auroc" and p.shape[1] == 2:
        return auroc(y == 0, p[:, 0])
    return float((p.argmax(1) == y).mean())


def run_one(ws: WindowSet, pooling: str, *, steps: int, lr: float, batch_size: int, val_every: int, strands: str,
            seed: int, overrides: dict) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    parts = {s: ws.part(s) for s in ("train", "val", "test")}
    xtr, ytr = parts["train"]
    by_class = [np.flatnonzero(ytr == c) for c in range(len(ws.labels))]
    xs = {s: torch.as_tensor(np.asarray(parts[s][0], dtype=np.int64)) for s in ("val", "test")}
    cfg = MambaConfig.from_preset("tiny", **overrides)
    model = MambaClassifier(cfg, len(ws.labels), pooling, strands=strands)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
    warm = min(100, steps // 20)
    rc_prob = 0.0 if ws.name in ORIENTED else 0.5
    best = (-1.0, None, 0)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, warmup_steps=warm, max_steps=steps, lr=lr, min_lr=1e-6)
        cls = rng.integers(len(by_class), size=batch_size)
        idx = np.array([rng.choice(by_class[c]) for c in cls])
        x = torch.as_tensor(np.asarray(xtr[idx], dtype=np.int64))
        if rc_prob > 0:
            flip = torch.as_tensor(rng.random(batch_size) < rc_prob)
            x = torch.where(flip[:, None], _rc(x), x)
        loss = F.cross_entropy(model(x), torch.as_tensor(ytr[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % val_every == 0 or step + 1 == steps:
            v = evaluate(model, xs["val"], parts["val"][1], ws.metric)
            print(f"#   {pooling} lr {lr:g} step {step + 1}: loss {loss.item():.3f} val {v:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            if v > best[0]:
                best = (v, copy.deepcopy(model.state_dict()), step + 1)
    model.load_state_dict(best[1])
    test = evaluate(model, xs["test"], parts["test"][1], ws.metric)
    return {"task": ws.name, "pooling": pooling, "lr": lr, "steps": steps, "best_step": best[2],
            "val": round(best[0], 4), "test": round(test, 4), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks-dir", default="runs/tasks")
    ap.add_argument("--task", required=True)
    ap.add_argument("--poolings", default="mean,max,attention,meanmax")
    ap.add_argument("--lrs", default="1e-3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--strands", default="both")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ws = WindowSet.load(f"{a.tasks_dir}/{a.task}")
    cols = ["task", "pooling", "lr", "steps", "best_step", "val", "test", "seconds"]
    print("\t".join(cols), flush=True)
    for lr in (float(v) for v in a.lrs.split(",")):
        for pooling in a.poolings.split(","):
            if pooling not in POOLINGS:
                raise SystemExit(f"error: unknown pooling {pooling!r}")
            r = run_one(ws, pooling, steps=a.steps, lr=lr, batch_size=a.batch_size, val_every=a.val_every,
                        strands=a.strands, seed=a.seed, overrides={"d_model": a.d_model, "n_layer": a.n_layer})
            print("\t".join(str(r[c]) for c in cols), flush=True)


if __name__ == "__main__":
    main()
