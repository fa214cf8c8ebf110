"""A suite of real labelled DNA tasks with honest baselines (issue 14).

Nothing is fetched at run time: every task is built by a ``prepare`` function from the genomes of
Debian's ``ragout-examples`` 2.3-4 and ``maffilter-examples`` 1.3.1 (copied to /work/shared/data;
``--data`` names the folder), the U. maydis MIPS gene models and the 4-ape EPO alignment of chr22 of
``maffilter-examples`` (``apt-get install maffilter-examples``; ``--umaydis-gff`` and ``--apes-maf``
name the files), gene calls from
pyrodigal (PyPI, ``pip install 'mamba-genome[tasks]'``) for the bacteria, and a synthetic control.
Each prepare docstring gives its provenance, split and construction.

==============  ======  ==============================================================  =======
task            length  question                                                        classes
==============  ======  ==============================================================  =======
coding_umaydis  512     U. maydis: inside an annotated CDS or intergenic (GC-matched)   2
splice_donor    256     U. maydis: centre GT is an intron donor or exonic (GC-matched)  2
coding          256     bacteria: inside a predicted gene or intergenic (GC-matched)    2
start_codon     256     bacteria: centre ATG is a predicted start or an internal ATG    2
strain          1,024   which of 5 S. aureus strains (interleaved 50-kbp blocks)        5
species         1,024   E. coli, S. aureus, V. cholerae, U. maydis or human             5
great_apes      4,096   human, chimpanzee, gorilla or orangutan (chr22, orthologues     4
                        share a split)
order_short     512     which of two motifs comes first (k-mer identical)               2
order_long      8,192   same, real background, motifs >= 5 kbp apart                    2
==============  ======  ==============================================================  =======

``prepare`` also writes the unlabelled pretraining FASTAs of the task groups
(:mod:`benchmarks.tasks.pretraining`); ``gpu`` pretrains one LM per group and runs the frozen
probe and fine-tuning of every task in one GPU call (:mod:`benchmarks.tasks.gpu`).

Run ``python -m benchmarks.tasks --help`` (or ``mamba-genome bench tasks -- --help``).
"""
from __future__ import annotations

from . import apes, coding, order, species, start_codon, strain, umaydis

# name -> prepare(data, out, seed=...) -> WindowSet
TASKS = {
    "coding_umaydis": umaydis.prepare_coding,
    "splice_donor": umaydis.prepare_donor,
    "coding": coding.prepare,
    "start_codon": start_codon.prepare,
    "strain": strain.prepare,
    "species": species.prepare,
    "great_apes": apes.prepare,
    "order_short": order.prepare_short,
    "order_long": order.prepare_long,
}

__all__ = ["TASKS"]
