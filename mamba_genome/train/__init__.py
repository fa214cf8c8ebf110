"""Training machinery (Lightning): schedules, the LM module, data module, callbacks, plots.

Modules, one concern each:

- ``schedule``: learning-rate warmup + cosine, sequence-length warmup, ``parse_duration``.
- ``lm_module``: ``LMModule``, the LightningModule that pretrains a ``MambaLM``.
- ``datamodule``: ``GenomeDataModule``, random training / tiled validation windows.
- ``callbacks``: step and wall-clock budgets, atomic export of ``best/``/``last/``
  and ``last.ckpt``, SIGTERM/SIGINT -> checkpoint and stop, the progress display.
- ``plots``: the ``loss_curve.png`` of a run.
- ``rundir``: the run-directory policy of every training command (refuse / ``--force`` /
  ``--resume``, the marker of our files, the lock of a live run, ``--out`` outside the inputs).
- ``rng``: Python / NumPy / torch RNG states for exact ``--resume``.

The workflows (:mod:`mamba_genome.workflows.pretrain`) assemble these. Nothing
is imported here eagerly, so ``import mamba_genome.train.schedule`` stays cheap.
"""
