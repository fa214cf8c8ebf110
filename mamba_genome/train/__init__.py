"""Training machinery (Lightning): schedules, the LM module, data module, callbacks, plots.

Modules, one concern each:

- ``schedule``: learning-rate warmup + cosine, sequence-length warmup, ``parse_duration``
  (pretraining and fine-tuning).
- ``engine``: the training engine of ``pretrain``, ``finetune`` and ``bench train``: the run-time
  choices per sequence-length stage (micro-batch, accumulation and memory policy from
  ``memory.plan_stage``, checked by ``memory.probe_stage`` on a GPU; expert overrides), the
  validation cadence (in optimizer steps, under 3% of the clock on GPU) and the one Trainer
  assembly (``TrainingRun``: callbacks, logs, best/last export, ``metrics.json``).
- ``memory``: the memory planner (``plan_stage``) and its probe (``probe_stage``).
- ``lm_module``: ``LMModule``, the LightningModule that pretrains a ``MambaLM``.
- ``classify_module``: ``ClassifyModule``, the LightningModule that fine-tunes a ``MambaClassifier``.
- ``datamodule``: ``GenomeDataModule``, random training / tiled validation windows.
- ``callbacks``: step and wall-clock budgets, the one atomic export of ``best/``/``last/``
  and ``last.ckpt`` (``RunExporter``), SIGTERM/SIGINT -> checkpoint and stop, the progress display.
- ``plots``: the ``loss_curve.png`` of a run.
- ``rundir``: the run-directory policy of every training command (refuse / ``--force`` /
  ``--resume``, the marker of our files, the lock of a live run, ``--out`` outside the inputs).
- ``rng``: Python / NumPy / torch RNG states for exact ``--resume``.

The workflows (:mod:`mamba_genome.workflows.pretrain`, :mod:`~mamba_genome.workflows.finetune`)
give the engine their LightningModule, data and labels. Nothing
is imported here eagerly, so ``import mamba_genome.train.schedule`` stays cheap.
"""
