#!/usr/bin/env bash
# One GPU run (about 5 minutes on one H200) that checks and times the vep branch:
#   1. tests/test_variants.py's CUDA test: on the Triton kernels, shared prefix reuse (sites with
#      three ALTs included) equals independent full passes in fp32, equals share=False, and bf16
#      tracks fp32;
#   2. bench_vep.py --compare: 60,000 SNVs of E. coli K-12, 7m (random init), 1 kbp windows, both
#      strands, once with one ALT per random position and once as 20,000 saturated sites; each
#      through the CLI end to end with window sharing (default) and without
#      (--no-window-sharing), the two TSVs compared, and the first 2,000 records scored in
#      process in fp32 and bf16 both ways (shared vs unshared, bf16 vs fp32);
#   3. engine_gap.py: bare forward vs state-carrying forward vs the engine at 2^20 and at a
#      score --vcf batch shape, under the default scan launch config and the training forward's,
#      plus a kernel profile of both forwards.
# Usage: bash benchmarks/check_vep_embed_gpu.sh   (PYTHON=... to pick the interpreter; results in $OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export OUT
"$PY" -m pytest -q -p no:cacheprovider tests/test_variants.py -k gpu 2>&1 | tail -3
"$PY" benchmarks/bench_vep.py --n 60000 --alts-per-site 1,3 --compare --precision-check 2000 \
    --workdir "${TMPDIR:-/tmp}/bench_vep_work" --json "$OUT/bench_vep_compare.json"
"$PY" benchmarks/engine_gap.py --json "$OUT/engine_gap.json"
