#!/usr/bin/env bash
# The model columns of the task suite (frozen probe, fine-tuned) for every task, in one GPU call, or one group
# after another (PER_GROUP=1).
#
# 1. Here, on a CPU machine (under a minute): bash benchmarks/tasks/build.sh runs/tasks (Debian's
#    ragout-examples and maffilter-examples, then prepare), or with this workplace's copies:
#      python -m benchmarks.tasks prepare --data /work/shared/data --out runs/tasks
#    (runs/ is git-ignored; windows + pretraining FASTAs are ~42 MB, so they travel with the tree.)
# 2. On the GPU machine, from the repository root, with runs/tasks carried along:
#      bash benchmarks/tasks/run_gpu.sh                        # everything, in $BUDGET seconds (450)
#      STAGES=probe,finetune bash benchmarks/tasks/run_gpu.sh  # reuse the LMs of an earlier call
#      MODEL=runs/my_lm STAGES=probe,finetune bash benchmarks/tasks/run_gpu.sh  # one LM for all tasks
#      TASKS=order_short,order_long bash benchmarks/tasks/run_gpu.sh
#    Groups share the GPU when run together: six LMs pretraining at once got 51 M tokens each where one alone
#    got 211 M (H200, 2026-12-01), so for the best numbers give each group the GPU to itself: one call per
#    group (TASKS=..., then merge), or
#      PER_GROUP=1 bash benchmarks/tasks/run_gpu.sh            # each group alone in turn, $BUDGET s each, merged
#                                     into $RESULTS_DIR/tasks_gpu.json (six groups: ~45 min at the default budget)
#      ABLATE=start_codon,splice_donor bash benchmarks/tasks/run_gpu.sh  # + a forward-only (--strands fwd)
#                                     fine-tune of those tasks, recorded as stage finetune_fwd (JSON, not the table)
#      ABLATE=splice_donor ABLATE_POOLING=meanmax bash benchmarks/tasks/run_gpu.sh  # + a fine-tune pooled
#                                     by mean and max (same strands), recorded as stage finetune_meanmax
#      STRANDS=fwd bash benchmarks/tasks/run_gpu.sh            # the forward-only classifier everywhere
#      POOLING=meanmax bash benchmarks/tasks/run_gpu.sh        # one pooling everywhere (default: per task)
#      LR=3e-3 bash benchmarks/tasks/run_gpu.sh               # fine-tuning peak LR (default 1e-3)
#
# What it does (python -m benchmarks.tasks gpu, benchmarks/tasks/gpu.py): pretrains one 1.4m LM per task
# group on that group's own unlabelled training sequence (U. maydis for coding_umaydis/splice_donor, the
# three bacteria for coding/start_codon, the apes' chr22 for great_apes, ...), all groups at once for
# $PRETRAIN_TIME s (default: 31% of $BUDGET); then, per group, the frozen probe of its tasks and a fine-tune per task, sized to end
# inside the budget (classifier over both strands' passes, pooled per task: baselines.POOLING_BY_TASK, else mean;
# no reverse-complement augmentation on the oriented tasks:
# benchmarks/tasks/baselines.py:finetune_plan). Progress lines carry the elapsed seconds; the results JSON is rewritten after every
# finished stage, in $OUT (the device's output folder) or runs/tasks_gpu. Merge it here afterwards:
#      python -m benchmarks.tasks merge <that folder>/tasks_gpu.json      # into benchmarks/tasks/results/
set -euo pipefail
TASKS_DIR=${TASKS_DIR:-runs/tasks}
RESULTS_DIR=${OUT:-runs/tasks_gpu}
BUDGET=${BUDGET:-450}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ ! -f "$TASKS_DIR/order_long/windows.npz" ]; then
  echo "error: $TASKS_DIR has no prepared tasks; run 'python -m benchmarks.tasks prepare --out $TASKS_DIR' on a CPU machine first" >&2
  exit 2
fi
args=(--tasks-dir "$TASKS_DIR" --budget "$BUDGET")
[ -n "${PRETRAIN_TIME:-}" ] && args+=(--pretrain-time "$PRETRAIN_TIME")  # default: 31% of the budget
[ -n "${STAGES:-}" ] && args+=(--stages "$STAGES")
[ -n "${MODEL:-}" ] && args+=(--model "$MODEL")
[ -n "${STRANDS:-}" ] && args+=(--strands "$STRANDS")  # default: both (forward + reverse-complement pass)
[ -n "${POOLING:-}" ] && args+=(--pooling "$POOLING")  # default: per task (baselines.POOLING_BY_TASK, else mean)
[ -n "${LR:-}" ] && args+=(--finetune-lr "$LR")  # peak fine-tuning LR (default 1e-3)
[ -n "${ABLATE:-}" ] && args+=(--ablate "$ABLATE")
[ -n "${ABLATE_POOLING:-}" ] && args+=(--ablate-pooling "$ABLATE_POOLING")
if [ -z "${PER_GROUP:-}" ]; then
  [ -n "${TASKS:-}" ] && args+=(--tasks "$TASKS")
  exec "$PY" -m benchmarks.tasks gpu --out "$RESULTS_DIR" "${args[@]}" "$@"
fi
# one group at a time, each with the GPU to itself and the whole $BUDGET, then one merged results file
groups=$("$PY" -c "from benchmarks.tasks.pretraining import GROUPS; import sys
want = set(sys.argv[1].split(',')) if sys.argv[1] else None
print(' '.join(','.join(t for t in g['tasks'] if want is None or t in want) for g in GROUPS.values()
               if want is None or want & set(g['tasks'])))" "${TASKS:-}")
parts=()
for tasks in $groups; do
  part="$RESULTS_DIR/group_${tasks%%,*}"
  mkdir -p "$part"
  echo "== $tasks (results: $part)"
  "$PY" -m benchmarks.tasks gpu --out "$part" --tasks "$tasks" "${args[@]}" "$@"
  parts+=("$part/tasks_gpu.json")
done
"$PY" -m benchmarks.tasks merge --results "$RESULTS_DIR/tasks_gpu.json" "${parts[@]}"
