"""``mamba-genome ingest``: tokenize a reference FASTA into a token store.

A thin wrapper over :func:`mamba_genome.data.store.ingest`; prints the
summary table (largest contigs, totals, throughput, store path) on stderr.
"""
from __future__ import annotations

import click

from ..data.store import ingest as ingest_fasta
from ..data.store import summary_rows
from .common import handle_errors, print_table


@click.command("ingest")
@click.argument("ref", metavar="REF", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", "out", metavar="STORE", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Store directory to write [default: REF without .fa[.gz] + .mgstore, beside REF, "
                   "or under $MAMBA_GENOME_CACHE if that directory is read-only].")
@click.option("--force", is_flag=True, help="Rebuild even if an up-to-date store exists, or replace a store "
              "built from another FASTA (only ever a directory ingest wrote).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
@handle_errors
def ingest(ref, out, force, quiet):
    """Tokenize the reference FASTA REF (plain, .gz or bgzip) into a token store.

    REF is read once, in constant memory, whatever its line widths; each
    contig becomes a memory-mapped token file. Re-running on an unchanged REF
    (same sha256) reuses the store. --force replaces only a store that ingest
    wrote, never another directory.

    \b
    Example:
      mamba-genome ingest hg38.fa.gz -o hg38.mgstore
      mamba-genome pretrain --data hg38.mgstore
    """
    store = ingest_fasta(ref, out, force=force, progress=not quiet)
    stats = store.ingest_stats
    if quiet:
        click.echo(str(store.path))
        return
    if stats.reused:
        click.echo(f"up to date: {store.path} (built {store.manifest.get('created', '?')} from this file's "
                   "content, sha256 checked; --force rebuilds it)", err=True)
    print_table(summary_rows(store))
    m = store.manifest
    speed = "" if stats.reused else f" in {stats.seconds:.2f} s ({stats.mb_per_s:.1f} MB/s of FASTA)"
    click.echo(
        f"{len(m['contigs'])} contigs, {m['total_length']:,} bp, {m.get('n_count', 0):,} N, "
        f"{m.get('iupac_count', 0):,} IUPAC codes (counted as N){speed}", err=True
    )
    all_n = [c["name"] for c in m["contigs"] if c["all_n"]]
    if all_n:
        click.echo(f"note: {len(all_n)} all-N contig(s) kept but never sampled: {', '.join(all_n[:5])}"
                   + (", ..." if len(all_n) > 5 else ""), err=True)
    click.echo(f"store: {store.path}", err=True)
    click.echo(str(store.path))
