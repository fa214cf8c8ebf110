#!/usr/bin/env bash
# The model stages of the task suite on a GPU machine, in one command (from the repository root):
#
#   bash benchmarks/tasks/run_gpu.sh                  # pretrain 1.4m for $PRETRAIN_TIME, then probe + fine-tune
#   MODEL=runs/my_lm bash benchmarks/tasks/run_gpu.sh # probe + fine-tune an existing model
#
# Steps: prepare the tasks into $OUT (skipped when present; ~2 min of CPU), pretrain the 1.4m preset on
# V. cholerae O1 biovar El Tor (a genome no task uses) unless MODEL is set, then `run --stages probe,finetune`
# merging into benchmarks/tasks/results/tasks.json (the CPU k-mer and CNN rows stay) and tasks.md.
# Budget: about 5 min pretraining + ~3 min probing + 5 x $FINETUNE_TIME s fine-tuning.
set -euo pipefail
DATA=${DATA:-/work/shared/data}
OUT=${OUT:-runs/tasks}
PRETRAIN_TIME=${PRETRAIN_TIME:-5m}
FINETUNE_TIME=${FINETUNE_TIME:-180}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi

if [ ! -f "$OUT/order_long/windows.npz" ]; then
  "$PY" -m benchmarks.tasks prepare --data "$DATA" --out "$OUT"
fi
if [ -z "${MODEL:-}" ]; then
  MODEL="$OUT/pretrain_1.4m_vcholerae_O1_biovar"
  if [ ! -d "$MODEL/best" ]; then
    "$PY" -m mamba_genome pretrain --fasta "$DATA/vcholerae/O1_biovar.fa.gz" --preset 1.4m \
      --max-time "$PRETRAIN_TIME" --out "$MODEL" --force
  fi
fi
"$PY" -m benchmarks.tasks run --tasks-dir "$OUT" --stages probe,finetune --model "$MODEL" \
  --finetune-time "$FINETUNE_TIME" --runs-dir "$OUT/finetune_runs" --threads 0 -v
