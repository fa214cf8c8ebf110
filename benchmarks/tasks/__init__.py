"""A suite of real labelled DNA tasks with honest baselines (issue 14).

Nothing is fetched at run time: every task is built by a ``prepare`` function from the genomes of
Debian's ``ragout-examples`` 2.3-4 (copied to /work/shared/data; ``--data`` names the folder, or
``apt-get install ragout-examples`` and point ``--data`` at a folder laid out the same way),
gene calls from pyrodigal (PyPI), and a synthetic control. Each prepare docstring gives its
provenance, split and construction.

=============  ======  =========================================================  ============
task           length  question                                                   classes
=============  ======  =========================================================  ============
coding         256     inside a predicted gene or intergenic (GC-matched)         2
start_codon    256     centre ATG is a gene start or an in-frame internal ATG     2
strain         1,024   which of 5 S. aureus strains (interleaved 50-kbp blocks)   5
order_short    512     which of two motifs comes first (k-mer identical)          2
order_long     8,192   same, real background, motifs >= 5 kbp apart               2
=============  ======  =========================================================  ============

Run ``python -m benchmarks.tasks --help`` (or ``mamba-genome bench tasks -- --help``).
"""
from __future__ import annotations

from . import coding, order, start_codon, strain

# name -> prepare(data, out, seed=...) -> WindowSet
TASKS = {
    "coding": coding.prepare,
    "start_codon": start_codon.prepare,
    "strain": strain.prepare,
    "order_short": order.prepare_short,
    "order_long": order.prepare_long,
}

__all__ = ["TASKS"]
