"""The ``mamba-genome`` command: one Click group, one module per subcommand.

Each subcommand module defines a Click command named like the module; the
bodies are thin wrappers over library functions in ``mamba_genome.workflows``
and ``mamba_genome.data``.
"""
from __future__ import annotations

import importlib
import importlib.util

import click

from .. import __version__
from .common import OneLineUsageGroup

# Subcommands in the order `--help` lists them.
COMMANDS = ["ingest", "pretrain", "evaluate", "finetune", "classify", "embed", "score", "generate", "probe", "bench"]


@click.group(cls=OneLineUsageGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="mamba-genome")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Long-sequence genomics with Mamba selective state-space models.

    \b
    Quick start (CPU, a few minutes, bundled E. coli genome):
      mamba-genome pretrain
    On your own genome:
      mamba-genome ingest hg38.fa.gz -o hg38.store
      mamba-genome pretrain --data hg38.store --preset 7m --seq-len 131072
      mamba-genome evaluate runs/pretrain --fasta held_out.fa
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register():
    for name in COMMANDS:
        modname = f"{__name__}.{name}"
        if importlib.util.find_spec(modname) is None:
            continue  # command not built yet
        mod = importlib.import_module(modname)
        main.add_command(getattr(mod, name))


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
