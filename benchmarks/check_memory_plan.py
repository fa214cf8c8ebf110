"""Check the memory planner (mamba_genome/train/memory.py) against a calibrate_memory.py JSON.

Prints, for every row that ran, the planner's estimated peak next to the measured one; then, for
each preset and length, what plan_stage picks at the JSON's device memory and its predicted
tokens/s against the best measured. ``--emit`` prints the CALIBRATION table for memory.py built
from the JSON (after a new calibration run: paste it, and commit the JSON beside it).

    PYTHONPATH=. python benchmarks/check_memory_plan.py benchmarks/results/calibrate_memory_h200_2026-12-01.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mamba_genome.model.config import MambaConfig  # noqa: E402
from mamba_genome.train import memory as mem  # noqa: E402


def _exp(n: int) -> str:
    return f"1 << {n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def emit(table: dict) -> str:
    lines = ["CALIBRATION: dict[tuple[int, int, int], dict] = {"]
    for (d, n, L), row in sorted(table.items()):
        curve = ", ".join(f"{_exp(t)}: {v}" for t, v in sorted(row["curve"].items()))
        pols = ", ".join(f'"{p}": {v}' for p, v in row["policies"].items())
        lines.append(f"    ({d}, {n}, {_exp(L)}): {{\"curve\": {{{curve}}},\n"
                     f"{' ' * 25}\"policies\": {{{pols}}}}},")
    return "\n".join(lines + ["}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calibration")
    ap.add_argument("--emit", action="store_true", help="print the CALIBRATION table for memory.py")
    a = ap.parse_args()
    data = json.loads(Path(a.calibration).read_text())
    rows = [r for r in data["rows"] if r.get("status") == "ok"]
    if a.emit:
        print(emit(mem.calibration_table(rows)))
        return 0
    print(f"{'preset':6} {'seq_len':>8} {'micro':>5} {'policy':13} {'measured':>9} {'estimate':>9} {'est/meas':>8}")
    worst = []
    for r in rows:
        est = mem.estimate_bytes(MambaConfig.from_preset(r["preset"]), mem.runtime_of(r["policy"]), r["seq_len"],
                                 r["micro_batch"]) / 2**30
        worst.append(est / r["peak_gib"])
        print(f"{r['preset']:6} {r['seq_len']:8d} {r['micro_batch']:5d} {r['policy']:13} {r['peak_gib']:9.2f} "
              f"{est:9.2f} {est / r['peak_gib']:8.3f}")
    print(f"estimate / measured: {min(worst):.3f} .. {max(worst):.3f} over {len(worst)} rows\n")
    free = (data["meta"].get("total_gib") or 80.0) * 2**30
    print(f"plan_stage at {free / 2**30:.1f} GiB free, 2^20 tokens per step:")
    for preset in sorted({r["preset"] for r in rows}):
        arch = MambaConfig.from_preset(preset)
        for L in sorted({r["seq_len"] for r in rows if r["preset"] == preset}):
            plan = mem.plan_stage(arch, L, max(1, (1 << 20) // L), device_type="cuda", free_bytes=int(free))
            best = max(r["tokens_per_s"] for r in rows if r["preset"] == preset and r["seq_len"] == L)
            print(f"  {preset:5} {L:8d}: {plan.reason}; predicted {plan.predicted_tokens_per_s / best:.1%} "
                  f"of the best measured ({best / 1e6:.3f} M)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
