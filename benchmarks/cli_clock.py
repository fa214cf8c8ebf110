"""Run the mamba-genome CLI with a wall clock on its training loop (for bench_quality and bench_defaults).

    python benchmarks/cli_clock.py CLOCK_FILE pretrain --data ... --out RUN

is ``mamba-genome pretrain --data ... --out RUN`` with one more Lightning callback, which only
appends lines ``<unix time> <event> <global step> <tokens seen or ->`` to CLOCK_FILE:
``step`` when an optimizer step starts (its first micro-batch) and ``val`` when a validation
ends. Nothing else about the run changes. :func:`read_clock` parses the file.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def _callback(clock_file: str):
    import lightning.pytorch as pl

    class Clock(pl.Callback):
        def __init__(self):
            self.last_step = None

        def _write(self, event, trainer, pl_module):
            tok = getattr(pl_module, "tokens_seen", None)
            with open(clock_file, "a") as fh:
                fh.write(f"{time.time():.6f} {event} {trainer.global_step} {'-' if tok is None else int(tok)}\n")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step != self.last_step:
                self.last_step = trainer.global_step
                self._write("step", trainer, pl_module)

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self._write("val", trainer, pl_module)

    return Clock()


def run(clock_file: str, cli_args: list[str]) -> None:
    import lightning.pytorch as pl

    init = pl.Trainer.__init__

    def with_clock(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), _callback(clock_file)]
        init(self, *args, **kwargs)

    pl.Trainer.__init__ = with_clock
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mamba_genome.cli import main

    main(cli_args, prog_name="mamba-genome")


def read_clock(path) -> list[tuple[float, str, int, int | None]]:
    """[(unix time, "step" | "val", global step, tokens seen or None)] in file order; [] if no file."""
    out = []
    p = Path(path)
    if p.is_file():
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                out.append((float(parts[0]), parts[1], int(parts[2]), None if parts[3] == "-" else int(parts[3])))
    return out


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
