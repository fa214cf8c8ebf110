#!/usr/bin/env bash
# One GPU run (about 6 minutes on one H200) that checks and times score --vcf:
#   1. tests/test_variants.py's CUDA test: on the Triton kernels, shared prefix reuse (sites with
#      three ALTs included) equals independent full passes of the anchored windows in fp32,
#      equals share=False, and bf16 tracks fp32;
#   2. bench_vep.py --compare: 1,000,000 random SNVs of E. coli K-12, 7m (random init), 1 kbp
#      windows, both strands, through the CLI end to end with the default 32-base grid of window
#      starts (the issue-15 target: <= 300 s), then the first 100,000 with --grid 1 (windows
#      centred exactly) for time and LLR agreement, and the first 5,000 in process in fp32 and bf16
#      (positions per SNV are counted on CPU: bench_vep.py --count-only);
#   3. engine_gap.py: bare vs state-carrying forward vs the embed engine (the streamed conv).
# Usage: bash benchmarks/check_vep_embed_gpu.sh   (PYTHON=... to pick the interpreter; results in $OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export OUT
"$PY" -m pytest -q -p no:cacheprovider tests/test_variants.py -k gpu 2>&1 | tail -3
"$PY" benchmarks/bench_vep.py --n 1000000 --compare --compare-n 100000 --precision-check 5000 --no-count \
    --workdir "${TMPDIR:-/tmp}/bench_vep_work" --json "$OUT/bench_vep_1m.json"
"$PY" benchmarks/engine_gap.py --json "$OUT/engine_gap.json" 2>&1 | grep "^|"
