#!/usr/bin/env bash
# Build the labelled-task suite on a clean machine with one command:
#   bash benchmarks/tasks/build.sh [OUT]        (default OUT: runs/tasks)
# 1. the genomes, gene models and ape alignment come from Debian's example-data packages
#    ragout-examples (bacteria) and maffilter-examples (U. maydis, the 4-ape chr22 EPO alignment):
#    installed with apt-get when missing (as root, or through sudo);
# 2. the project with its `tasks` extra (pyrodigal for the bacterial gene calls), if not importable;
# 3. `python -m benchmarks.tasks prepare --data debian --out OUT`: every task's windows, splits and
#    statistics, and the unlabelled pretraining FASTAs of the task groups. Nothing is fetched at
#    run time beyond the package installs.
# Then: `python -m benchmarks.tasks run --tasks-dir OUT --stages kmer,cnn` (CPU baselines) and
# `bash benchmarks/tasks/run_gpu.sh` (the model columns, on a GPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/tasks}
PY=${PYTHON:-python}
if [ ! -f /usr/share/doc/ragout/examples/E.Coli/references/MG1655-K12.fasta.gz ] \
   || [ ! -f /usr/share/doc/maffilter/examples/Umaydis/Umaydis.gff3.gz ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y --no-install-recommends ragout-examples maffilter-examples
fi
"$PY" -c "import mamba_genome, pyrodigal" 2>/dev/null || "$PY" -m pip install -q -e ".[tasks]"
exec "$PY" -m benchmarks.tasks prepare --data debian --out "$OUT"
