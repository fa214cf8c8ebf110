"""``generate`` workflow: sample new DNA from a trained language model into a FASTA file.

Owns the options, the jobs (``num_samples`` per prompt record, or unprompted), the output
and the timing; the sampling itself is :func:`mamba_genome.inference.sample.sample_blocks`
(recurrent step, state carried, many samples per batch, constant memory in the length).

Output: one FASTA record per sample, 80 bases a line, named ``sample_<k>`` (or
``<prompt>_sample_<k>``, k from 1), the header carrying ``length``, ``temperature``,
``top_k`` and ``seed``. Only the generated bases are written, not the prompt. Sampled bases
are spooled per batch to a memory-mapped scratch file beside the output, so host memory does
not grow with the length either; the FASTA is written to ``.<name>.tmp-<pid>`` and moved into
place at the end (an interrupted run leaves no partial OUT). ``out="-"``: stdout.

Reproducible: the same model, options, seed, device type and batch size give the same bases.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

#: Samples run together when ``batch_size=None``: on a GPU, on CPU.
GPU_BATCH, CPU_BATCH = 256, 64
LINE_WIDTH = 80


@dataclass
class GenerateResult:
    """What :func:`generate` did."""

    out: str
    samples: int
    length: int
    seconds: float          # sampling (prefill included), not start-up or model load
    load_seconds: float     # start of generate() to the model being ready

    @property
    def bases(self) -> int:
        return self.samples * self.length

    @property
    def bases_per_s(self) -> float:
        return self.bases / self.seconds if self.seconds > 0 else float("nan")

    def summary_rows(self) -> list[dict]:
        return [{"samples": f"{self.samples:,}", "bases": f"{self.bases:,}", "seconds": f"{self.seconds:.2f}",
                 "bases/s": f"{self.bases_per_s:,.0f}", "output": self.out}]


def check_options(length: int, num_samples: int, temperature: float, top_k: int | None,
                  batch_size: int | None) -> None:
    """Raise ``UserError`` naming the flag for any bad sampling option."""
    if length < 1:
        raise UserError(f"--length must be at least 1, got {length}")
    if num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {num_samples}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"--temperature must be a positive number, got {temperature} (use --top-k 1 for greedy)")
    if top_k is not None and not 1 <= top_k <= 4:
        raise UserError(f"--top-k must be 1..4 (there are 4 bases), got {top_k}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")


def generate(model_path, out="-", length: int = 1000, prompt=None, num_samples: int = 1, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, batch_size: int | None = None, device: str | None = None,
             precision: str = "auto", progress: bool = True) -> GenerateResult:
    """Sample ``num_samples`` sequences of ``length`` bases (per prompt record) and write FASTA.

    Args:
        model_path: a model directory or a pretraining run directory (its ``best/``).
        out: output FASTA path, or ``"-"`` for stdout.
        length: bases generated per sample (the prompt is not counted or written).
        prompt: optional FASTA (or token store); every record is a prompt that
            ``num_samples`` samples continue.
        num_samples: samples per prompt (or in all, without a prompt).
        temperature: > 0; below 1 sharpens, above 1 flattens the model's distribution.
        top_k: sample among the k most likely bases only (1 = greedy); None: all 4.
        seed: random seed.
        batch_size: samples run together (None: 256 on a GPU, 64 on CPU).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (GPU if available).
        precision: ``"auto"`` (bf16 autocast on a CUDA GPU that supports it, else fp32),
            ``"fp32"`` or ``"bf16"``.
        progress: tqdm bar in bases on stderr.

    Returns:
        :class:`GenerateResult` (samples, length, seconds, bases/s).

    Raises:
        UserError (or subclasses): bad options, unwritable ``out``, bad prompt FASTA, a model
        that is not a language model, missing or incomplete model files.
    """
    import torch

    from ..checkpoint import load_model
    from ..device import resolve_device
    from ..inference.engine import check_precision, progress_bar
    from ..inference.sample import sample_blocks
    from ..inference.sequences import open_sequences

    t0 = time.perf_counter()
    check_options(length, num_samples, temperature, top_k, batch_size)
    check_precision(precision)
    out_path = None if str(out) == "-" else _check_output(Path(out))
    prompts = [(None, None)]
    if prompt is not None:
        seqs = open_sequences(prompt, progress=progress, what="--prompt")
        prompts = [(name, np.asarray(seqs[name])) for name in seqs.names]
    dev = resolve_device(device)
    model, meta = load_model(model_path, device=dev)
    if meta.get("model_type") != "lm":
        raise UserError(f"{model_path} is a '{meta.get('model_type')}' model; generate needs a pretrained "
                        "language model")
    model.eval()
    B = batch_size or (GPU_BATCH if dev.type == "cuda" else CPU_BATCH)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    header = f"length={length} temperature={temperature:g} top_k={top_k or 'none'} seed={seed}"
    t_ready = time.perf_counter()

    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}") if out_path else None
    fh = open(tmp, "w") if tmp else sys.stdout
    scratch = tempfile.mkdtemp(prefix=".mg-generate-", dir=out_path.parent if out_path else None)
    bar = progress_bar(progress, length * num_samples * len(prompts), "generate")
    try:
        for name, ptoks in prompts:
            prefix = f"{name}_sample" if name is not None else "sample"
            for first in range(0, num_samples, B):
                n = min(B, num_samples - first)
                spool = np.lib.format.open_memmap(Path(scratch) / "batch.npy", mode="w+", dtype=np.uint8,
                                                  shape=(n, length))
                for s, block in sample_blocks(model, n, length, ptoks, temperature, top_k, gen, precision):
                    spool[:, s: s + block.shape[1]] = block
                    bar.update(block.size)
                for k in range(n):
                    desc = header if name is None else f"{header} prompt={name}"
                    _write_record(fh, f"{prefix}_{first + k + 1} {desc}", spool[k])
                del spool
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t_ready
        if tmp:
            fh.close()
            os.replace(tmp, out_path)
        else:
            fh.flush()
    except BaseException:
        if tmp:
            fh.close()
            tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return GenerateResult(str(out_path) if out_path else "-", num_samples * len(prompts), length, seconds,
                          t_ready - t0)


#: token id -> ASCII letter (the sampler emits only A/C/G/T; anything else would show as N)
_LETTERS = np.full(256, ord("N"), dtype=np.uint8)
_LETTERS[[5, 6, 7, 8]] = np.frombuffer(b"ACGT", dtype=np.uint8)


def _write_record(fh, header: str, toks: np.ndarray, block_lines: int = 4096) -> None:
    """One FASTA record, LINE_WIDTH bases a line, decoded a block of lines at a time."""
    fh.write(f">{header}\n")
    step = LINE_WIDTH * block_lines
    for s in range(0, len(toks), step):
        text = _LETTERS[np.asarray(toks[s: s + step])].tobytes().decode("ascii")
        fh.write("\n".join(text[i: i + LINE_WIDTH] for i in range(0, len(text), LINE_WIDTH)) + "\n")


def _check_output(out: Path) -> Path:
    """Create ``out``'s directory if needed; a one-line error if it cannot be written."""
    if out.is_dir():
        raise UserError(f"-o {out} is a directory; give a file name such as {out / 'generated.fa'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"-o {out}: cannot create directory {out.parent} ({exc.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"-o {out}: directory {out.parent} is not writable")
    return out


__all__ = ["generate", "GenerateResult", "check_options"]
