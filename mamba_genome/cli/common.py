"""Shared CLI plumbing: error reporting, ``--debug``, progress and table output.

Every subcommand body runs inside :func:`handle_errors`, so a
:class:`~mamba_genome.errors.UserError` (or an OSError: a full disk) becomes one ``error: ...`` line on
stderr with exit status 1, and a broken pipe (``| head``) exits quietly.
With ``mamba-genome --debug <cmd>`` the full traceback is shown instead.

Usage errors (an unknown option or command, a missing argument, a bad value)
are one line too, ``error: <what> (see 'mamba-genome <cmd> --help')``, with
exit status 2 (:class:`OneLineUsageGroup`, the class of the top-level group).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

import click

from ..errors import RunInterrupted, UserError


def debug_enabled() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("debug"):
            return True
        ctx = ctx.parent
    return os.environ.get("MAMBA_GENOME_DEBUG", "") not in ("", "0")


class OneLineUsageError(click.UsageError):
    """A usage error shown as one ``error:`` line with a pointer to ``--help`` (exit status 2)."""

    def __init__(self, exc: click.UsageError):
        super().__init__(exc.format_message(), ctx=exc.ctx)

    def show(self, file=None) -> None:
        msg = " ".join(self.format_message().split()).replace(". Did you mean", "; did you mean").rstrip(".")
        if msg[:1].isupper() and msg[1:2].islower():
            msg = msg[0].lower() + msg[1:]
        where = self.ctx.command_path if self.ctx is not None else "mamba-genome"
        click.echo(f"error: {msg} (see '{where} --help')", file=file, err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc  # `mamba-genome` alone still prints the help
    return OneLineUsageError(exc)


class OneLineUsageGroup(click.Group):
    """A Click group whose usage errors, and those of its subcommands, are one line.

    Click's own form is four lines (usage, a "Try --help" hint, a blank line,
    ``Error: ...``); parsing the group's options, resolving the subcommand and
    parsing its arguments all happen in :meth:`make_context` and :meth:`invoke`,
    so both re-raise click's error as :class:`OneLineUsageError`.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from exc


def handle_errors(fn):
    """Decorator for command callbacks: UserError (and an OSError such as a full disk) -> one stderr
    line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RunInterrupted as exc:  # a note (checkpoint saved, how to resume), not an error
            if debug_enabled():
                raise
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except UserError as exc:
            if debug_enabled():
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # `mamba-genome classify x.fa | head`: stop quietly, like cat does.
            with contextlib.suppress(Exception):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except MemoryError:
            if debug_enabled():
                raise
            click.echo("error: out of memory; try a smaller --batch-size or --seq-len", err=True)
            sys.exit(1)
        except OSError as exc:  # a full disk, a directory that cannot be written: what and where, in one line
            if debug_enabled():
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def print_table(rows: list[dict], columns: list[str] | None = None, file=None) -> None:
    """Print a small aligned text table (the end-of-command summary)."""
    if not rows:
        return
    columns = columns or list(rows[0].keys())
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out = file or sys.stderr
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    click.echo(line, file=out)
    click.echo("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        click.echo("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)), file=out)


def _numeric(v: str) -> bool:
    try:
        float(v.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False
