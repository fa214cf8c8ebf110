"""Check on 2 GPUs (DDP) what tests/test_reliability_runs.py checks on one CPU process.

1. ``pretrain --devices 2 --strategy ddp`` runs; a second run on the same
   ``--out`` is refused with one ``error:`` line naming rank 0's PID.
2. SIGTERM to rank 0 only (Lightning forwards it to the rank it launched):
   exit 143 within a minute, the note ``interrupted by SIGTERM at step N;
   checkpoint saved to ...``, and ``last.ckpt`` holds step N.
3. ``--resume`` (2 GPUs again) finishes all steps and writes metrics.json.
4. The stderr of the run, written to a file, stays small (plain lines, no bar).

Run on a machine with 2 GPUs, from the repository root::

    python benchmarks/check_ddp_signals.py --out /tmp/ddp-signals

It prints one JSON object and exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def last_logged_step(run: Path) -> int:
    rows = []
    for p in sorted(run.glob("logs/v*/metrics.csv")):
        with open(p) as fh:
            rows += [int(r["step"]) for r in csv.DictReader(fh) if r.get("step")]
    return max(rows, default=-1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/ddp-signals", help="scratch directory (replaced)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--term-at", type=int, default=40, help="send SIGTERM once this step is logged")
    a = ap.parse_args()
    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    run = root / "run"
    exe = [sys.executable, "-m", "mamba_genome"]
    cmd = [*exe, "pretrain", "--preset", "tiny", "--seq-len", "1024", "--batch-size", "64", "--devices", "2",
           "--strategy", "ddp", "--max-steps", str(a.steps), "--val-every", "100", "--out", str(run)]
    res: dict = {"command": " ".join(cmd)}
    ok = True
    with open(root / "run.stderr", "wb") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        t0 = time.monotonic()
        while last_logged_step(run) < a.term_at:
            if p.poll() is not None or time.monotonic() - t0 > 900:
                res["error"] = f"run ended or stalled before step {a.term_at} (rc {p.poll()})"
                print(json.dumps(res, indent=1))
                return 1
            time.sleep(0.5)
        second = subprocess.run([*exe, "pretrain", "--preset", "tiny", "--max-steps", "2", "--out", str(run),
                                 "--force"], capture_output=True, text=True)
        lines = second.stderr.strip().splitlines()
        res["second_run"] = {"rc": second.returncode, "stderr": lines}
        ok &= second.returncode != 0 and len(lines) == 1 and f"PID {p.pid}" in lines[0]
        t_sig = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)  # rank 0 only
        try:
            rc = p.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = "timeout"
        res["sigterm"] = {"rc": rc, "seconds_to_exit": round(time.monotonic() - t_sig, 1)}
    note = (root / "run.stderr").read_text(errors="replace").strip().splitlines()[-1]
    res["sigterm"]["note"] = note
    ok &= rc == 143 and note.startswith("interrupted by SIGTERM at step ")
    try:
        import torch

        step = torch.load(run / "last.ckpt", weights_only=True, map_location="cpu")["global_step"]
        res["sigterm"]["ckpt_step"] = step
        ok &= f"at step {step};" in note
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        res["sigterm"]["ckpt_error"] = repr(exc)
        ok = False
    with open(root / "resume.stderr", "wb") as err:
        r = subprocess.run([*exe, "pretrain", "--out", str(run), "--resume", "--devices", "2", "--strategy", "ddp"],
                           stdout=subprocess.DEVNULL, stderr=err)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    res["resume"] = {"rc": r.returncode, "steps": metrics.get("steps"), "val_bits_per_base":
                     metrics.get("val_bits_per_base")}
    ok &= r.returncode == 0 and metrics.get("steps") == a.steps
    res["stderr_bytes"] = {"interrupted_run": (root / "run.stderr").stat().st_size,
                           "resumed_run": (root / "resume.stderr").stat().st_size}
    res["ok"] = bool(ok)
    print(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
