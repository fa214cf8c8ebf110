#!/usr/bin/env bash
# The CLI-defaults checks of BENCHMARKS.md section 4 that are still open, each part under the
# device's 10-minute limit per call on one H200:
#   part 1 (~8 min): the time-to-quality run with today's defaults (2^18-token steps for a 270 s
#          run, the time budget fitted on recent steps), to compare with the 270 s sweep of
#          benchmarks/results/bench_quality_270s_h200_2026-12-01.*, then 7m at 2^17 (120 steps);
#   part 2 (~7 min): 7m at 2^20 and 1.4m at 2^17 (120 steps each) against the calibration;
#   part 3 (~9 min): 7m at 2^10, 2^14, 2^17 and 2^20 (120 steps each) in one call.
# Each bench_quality configuration starts from an empty Triton cache, as the sweep did.
# Usage: bash benchmarks/check_defaults_gpu.sh 1|2|3   (FASTA=... the U. maydis FASTA; results in $OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-bench_out}
FASTA=${FASTA:-.probe/data/Umaydis.fa.gz}
mkdir -p "$OUT"
case "${1:-}" in
  1)
    TRITON_CACHE_DIR="$(mktemp -d)" "$PY" benchmarks/bench_quality.py --fasta "$FASTA" --max-time 270s \
        --out-dir "$OUT/quality" > "$OUT/quality.log" 2>&1 || echo "bench_quality failed: see quality.log"
    head -8 "$OUT/quality/bench_quality.md" 2>/dev/null || true
    "$PY" benchmarks/bench_defaults.py --presets 7m --seq-exps 17 --max-steps 120 --total-s 200 \
        --out-dir "$OUT/defaults_7m_2p17" > "$OUT/defaults_1.log" 2>&1 || echo "bench_defaults failed"
    cat "$OUT/defaults_7m_2p17/bench_defaults.md" 2>/dev/null || true
    ;;
  2)
    "$PY" benchmarks/bench_defaults.py --presets 7m --seq-exps 20 --max-steps 120 --total-s 230 \
        --out-dir "$OUT/defaults_7m_2p20" > "$OUT/defaults_2a.log" 2>&1 || echo "bench_defaults failed"
    "$PY" benchmarks/bench_defaults.py --presets 1.4m --seq-exps 17 --max-steps 120 --total-s 150 \
        --out-dir "$OUT/defaults_1.4m_2p17" > "$OUT/defaults_2b.log" 2>&1 || echo "bench_defaults failed"
    cat "$OUT"/defaults_*/bench_defaults.md 2>/dev/null || true
    ;;
  3)
    "$PY" benchmarks/bench_defaults.py --presets 7m --max-steps 120 --total-s 560 \
        --out-dir "$OUT/defaults_7m" > "$OUT/defaults_3.log" 2>&1 || echo "bench_defaults failed"
    cat "$OUT"/defaults_7m/bench_defaults.md 2>/dev/null || true
    ;;
  *) echo "usage: $0 1|2|3" >&2; exit 2 ;;
esac
