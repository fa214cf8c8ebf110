"""Workflows: one typed library function per command, which the CLI wraps.

``pretrain`` (:mod:`.pretrain`), ``evaluate`` (:mod:`.evaluate`), ``finetune``,
``classify``, ``embed``, ``probe``, ... each live in their own module and are
imported from there (``from mamba_genome.workflows.pretrain import pretrain``);
nothing is imported here eagerly, so loading one workflow never pulls in the
dependencies of the others.
"""
