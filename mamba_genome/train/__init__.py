"""Training machinery (Lightning): schedules, the LM module, data module, callbacks, plots.

Modules, one concern each:

- ``schedule``: learning-rate warmup + cosine, sequence-length warmup, ``parse_duration``.
- ``lm_module``: ``LMModule``, the LightningModule that pretrains a ``MambaLM``.
- ``datamodule``: ``GenomeDataModule``, random training / tiled validation windows.
- ``callbacks``: step and wall-clock budgets, atomic export of ``best/``/``last/``
  and ``last.ckpt``, the progress bar.
- ``plots``: the ``loss_curve.png`` of a run.

The workflows (:mod:`mamba_genome.workflows.pretrain`) assemble these. Nothing
is imported here eagerly, so ``import mamba_genome.train.schedule`` stays cheap.
"""
