#!/usr/bin/env bash
# The model stages of the task suite (frozen probe, fine-tuning) on a GPU machine, in one command.
#
# 1. Here, on a CPU machine with /work/shared/data, pyrodigal and maffilter-examples (~3 min):
#      python -m benchmarks.tasks prepare --data /work/shared/data --out runs/tasks
#    (runs/ is git-ignored; the windows are ~14 MB of .npz, so they can travel with the tree.)
# 2. On the GPU machine, from the repository root, with runs/tasks carried along:
#      bash benchmarks/tasks/run_gpu.sh                  # pretrain 1.4m first, then probe + fine-tune
#      MODEL=runs/my_lm bash benchmarks/tasks/run_gpu.sh # probe + fine-tune an existing LM
#
# Without MODEL it pretrains the 1.4m preset for $PRETRAIN_TIME on $PRETRAIN_FASTA (default: the bundled
# E. coli K-12 genome, which travels with the repository; the bacterial `coding`/`start_codon` windows come
# from that genome, so this LM has seen their sequence, never their labels). The results merge into
# benchmarks/tasks/results/tasks.json (the CPU k-mer and CNN rows stay) and tasks.md.
# Budget: $PRETRAIN_TIME + ~3 min of probing + 7 x $FINETUNE_TIME s of fine-tuning (defaults: ~30 min).
set -euo pipefail
OUT=${OUT:-runs/tasks}
PRETRAIN_TIME=${PRETRAIN_TIME:-5m}
PRETRAIN_FASTA=${PRETRAIN_FASTA:-mamba_genome/bundled/ecoli_k12.fa.gz}
FINETUNE_TIME=${FINETUNE_TIME:-180}
PROBE_LAYERS=${PROBE_LAYERS:-0,2,4,6,8,10,11}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [ ! -f "$OUT/order_long/windows.npz" ]; then
  echo "error: $OUT has no prepared tasks; run 'python -m benchmarks.tasks prepare --out $OUT' on a CPU machine first" >&2
  exit 2
fi
if [ -z "${MODEL:-}" ]; then
  MODEL="$OUT/pretrain_1.4m"
  if [ ! -d "$MODEL/best" ]; then
    "$PY" -m mamba_genome pretrain --fasta "$PRETRAIN_FASTA" --preset 1.4m --max-time "$PRETRAIN_TIME" \
      --out "$MODEL" --force
  fi
fi
"$PY" -m benchmarks.tasks run --tasks-dir "$OUT" --stages probe,finetune --model "$MODEL" \
  --probe-layers "$PROBE_LAYERS" --finetune-time "$FINETUNE_TIME" --runs-dir "$OUT/finetune_runs" --threads 0 -v
