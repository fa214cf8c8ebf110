"""``embed`` workflow: FASTA (+ optional BED regions) -> embedding file.

Owns choosing the records to embed and wiring input, model and writer:

- input: a FASTA (plain/gzip/BGZF) or a token store directory, read by
  :func:`mamba_genome.inference.open_sequences`: small FASTA files
  (< ``SMALL_FASTA_BYTES`` on disk) are read into memory; larger ones are
  ingested once into a token store (cached beside the FASTA) whose
  memory-mapped contigs are sliced chunk by chunk, so a 250 Mbp chromosome
  is never loaded whole;
- records: every FASTA record, or every BED region (id = the BED name column,
  else ``contig:start-end``, with ``(+)``/``(-)`` for a stranded one); a ``-``
  region is embedded as its reverse complement (per-base rows then run from
  ``end - 1`` down to ``start``) and the output's ``strand`` attribute holds
  one character per record (``+``, ``-`` or ``.``);
- model: :func:`mamba_genome.api.load`, streaming each record through the
  model ``chunk_size`` bases at a time (the engine, :mod:`mamba_genome.inference.engine`);
- output: :class:`mamba_genome.io.EmbeddingWriter` (format from ``out``'s
  extension; per-base rows are written chunk by chunk, atomically; an
  output that is the FASTA, the BED or a model file is refused up front).

Cheap checks (options, output location, BED path) run before the model is loaded; the model then
loads on a worker thread while the input is read (:func:`mamba_genome.api.load_while`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError
# FASTA files at least this big (bytes on disk) are ingested to a token store and memory-mapped
from ..inference.sequences import SMALL_FASTA_BYTES


@dataclass
class EmbedResult:
    """What :func:`embed_file` did."""

    out: Path
    records: int
    bp: int
    seconds: float
    d_model: int
    pool: str

    @property
    def bp_per_s(self) -> float:
        return self.bp / self.seconds if self.seconds > 0 else float("nan")

    def summary_rows(self) -> list[dict]:
        return [{"records": f"{self.records:,}", "bp": f"{self.bp:,}", "d_model": self.d_model, "pool": self.pool,
                 "seconds": f"{self.seconds:.2f}", "bp/s": f"{self.bp_per_s:,.0f}", "output": str(self.out)}]


def parse_pool(pool: str | None) -> str | None:
    """``"mean"``/``"last"``/``"none"`` (or None) -> the API's pool argument."""
    if pool is None or str(pool).lower() == "none":
        return None
    if pool not in ("mean", "last"):
        raise UserError(f"--pool must be mean, last or none, got '{pool}'")
    return pool


#: records (or BED regions) shorter than this are read into memory; longer ones stream from
#: their contig's memmap
COPY_BELOW = 1 << 20


def embed_file(input_fa, model_path, out, bed=None, pool: str | None = "mean", layer: int | None = None,
               stride: int = 1, rc_average: bool = False, batch_size: int | None = None, device: str | None = None,
               precision: str = "auto", chunk_size: int | None = None, progress: bool = True) -> EmbedResult:
    """Embed every record of ``input_fa`` (or every region of ``bed``) and write ``out``.

    Args:
        input_fa: FASTA file (plain, .gz, bgzip) or token store directory.
        model_path: model directory or run directory (uses ``best/``).
        out: output file; the extension picks the format (.h5, .npz, .npy, .parquet).
        bed: optional BED file of regions (0-based, half-open; 4th column = id).
        pool: ``"mean"``, ``"last"`` or ``"none"``/None (per-base; .h5 or .npz only).
        layer: block index (0-based) to read instead of the final layer.
        stride: per-base only: keep every ``stride``-th position of each record.
        rc_average: average with the reverse complement's embeddings.
        batch_size: records embedded together (None: see :meth:`mamba_genome.api.GenomeModel.embed`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (GPU if available).
        precision: ``"auto"`` (bf16 on a CUDA GPU that supports it, else fp32), ``"fp32"`` or ``"bf16"``.
        chunk_size: bases per streamed chunk (None: on a GPU ``api.CHUNK_TOKENS`` / records still running,
            at least ``api.DEFAULT_CHUNK_SIZE``; on CPU ``api.DEFAULT_CHUNK_SIZE``).
        progress: tqdm bar in base pairs on stderr.

    Returns:
        :class:`EmbedResult` (output path, records, bp, seconds).

    Raises:
        UserError (or subclasses): bad options, unwritable ``out``, bad FASTA
        or BED, missing/incomplete model files (``CheckpointError``).
    """
    from ..api import check_precision, load_while
    from ..checkpoint import model_dir_or_none
    from ..io import EmbeddingWriter, check_output

    t0 = time.perf_counter()
    pool = parse_pool(pool)
    if stride < 1:
        raise UserError(f"--stride must be >= 1, got {stride}")
    if stride != 1 and pool is not None:
        raise UserError("--stride only applies to per-base output (--pool none)")
    check_precision(precision)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"--chunk-size must be >= 1, got {chunk_size}")
    target = check_output(out, per_base=pool is None, inputs=[input_fa, bed, model_dir_or_none(model_path)])
    out = target.path
    if bed is not None and not Path(bed).is_file():
        raise UserError(f"{bed}: no such BED file; check the --bed path")

    # the model loads on a worker thread while the input is read or ingested
    model, (seqs, records, strands) = load_while(model_path, lambda: _read_inputs(input_fa, bed, progress), device)
    precision = model.resolve_precision(precision)
    attrs = {"model": str(model_path), "pool": "none" if pool is None else pool, "layer": layer,
             "rc_average": bool(rc_average), "precision": precision, "input": str(input_fa),
             "bed": str(bed) if bed is not None else None, "mamba_genome_version": __version__}
    if strands is not None:
        attrs["strand"] = strands  # one character per record, in record order
    kw = dict(layer=layer, chunk_size=chunk_size, batch_size=batch_size, rc_average=rc_average,
              precision=precision, progress=progress)
    with EmbeddingWriter(target, records, model.d_model, per_base=pool is None, stride=stride, attrs=attrs) as writer:
        if pool is None:
            model.embed(seqs, pool=None, stride=stride, sink=writer, **kw)
        else:
            writer.set_pooled(np.atleast_2d(model.embed(seqs, pool=pool, **kw)))
    return EmbedResult(out, len(records), int(sum(r.length for r in records)), time.perf_counter() - t0,
                       model.d_model, "none" if pool is None else pool)


def _read_inputs(input_fa, bed, progress: bool):
    """(sequences, RecordInfo list, strands or None) of the FASTA's records or of the BED's regions."""
    from ..data.bed import read_bed
    from ..inference.sequences import open_sequences
    from ..io import RecordInfo

    tokens = open_sequences(input_fa, progress=progress, in_memory_below=SMALL_FASTA_BYTES)
    lengths = tokens.lengths
    if bed is not None:
        regions = read_bed(bed, lengths)
        records = [RecordInfo(r.id, r.contig, r.start, r.end) for r in regions]
        seen: dict[str, int] = {}
        for r in regions:
            if r.id in seen:
                raise UserError(f"{bed}:{r.line}: region id '{r.id}' repeats line {seen[r.id]}; "
                                "ids (the 4th column) must be unique")
            seen[r.id] = r.line
    else:
        records = [RecordInfo(name, name, 0, n) for name, n in lengths.items()]
    # short records are copied out of the store: a memmap view would keep the contig's file open,
    # and a FASTA of many thousands of records would run out of file descriptors
    seqs = [np.array(tokens[r.contig][r.start: r.end]) if r.end - r.start < COPY_BELOW
            else tokens[r.contig][r.start: r.end] for r in records]
    strands = "".join(r.strand for r in regions) if bed is not None else None
    if strands and "-" in strands:
        from ..data.tokenizer import reverse_complement_tokens

        # the minus strand reads the reverse complement (a copy in memory, even for a long region)
        seqs = [reverse_complement_tokens(s) if c == "-" else s for s, c in zip(seqs, strands)]
    return seqs, records, strands


__all__ = ["embed_file", "EmbedResult", "parse_pool", "SMALL_FASTA_BYTES"]
