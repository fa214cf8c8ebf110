"""Inference throughput in one go: 7m forward at 2^20, end-to-end ``mamba-genome embed`` on a
synthetic 100 Mbp FASTA including start-up, start-up alone, and ``generate`` bases/s.

What is measured (random-initialised models: throughput does not depend on the weights):

1. **forward**: ``MambaLM.backbone`` of the 7m preset on (1, 2^20) tokens on the GPU under bf16
   autocast (``bench_embed.bench_config``: warm-up calls, then the median of repeats), and the
   same through ``GenomeModel.embed`` (engine path: host tokens, streamed, mean-pooled).
2. **start-up**: wall time of ``python -c "import torch"``, and of ``python -m mamba_genome embed``
   on a 1 kbp FASTA (interpreter, imports, CUDA context, model load, kernel compilation or
   cache load, one tiny forward, output); the top imports of ``python -X importtime`` of it.
3. **embed end to end**: wall time of ``python -m mamba_genome embed BIG.fa --model M -o e.npy``
   on a synthetic FASTA of ``--bp`` random bases (4 records) written by this script: the first
   run ingests it into a token store (``BIG.mgstore``, as for any FASTA >= 64 MiB), the second
   reuses the store. Mbp/s = bases / wall seconds, start-up included.
4. **generate**: :func:`mamba_genome.workflows.generate.generate` in process (model loaded),
   ``--length`` bases for each of B samples per batch; bases/s = B * length / seconds.

On an environment that compiles every module from source in every process (no .pyc files, and
PYTHONDONTWRITEBYTECODE=1: the GPU image's torch), ``--pycache-prefix DIR`` first compiles the bytecode
into DIR, so the start-up is what a pip-installed torch gives.

Usage (from the repo root, no install needed):
    python benchmarks/bench_inference.py                  # on the GPU box, ~3-5 minutes
    python benchmarks/bench_inference.py --smoke          # CPU, tiny model, 0.2 Mbp: checks the script
Writes ``$OUT/bench_inference.json`` when ``$OUT`` is set (or to ``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mamba_genome.checkpoint import save_model  # noqa: E402
from mamba_genome.model.config import MambaConfig  # noqa: E402
from mamba_genome.model.lm import MambaLM  # noqa: E402


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _wall(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    sec = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return sec, proc


def write_random_fasta(path: Path, bp: int, records: int = 4, seed: int = 0) -> int:
    """``records`` records of random A/C/G/T totalling ``bp`` bases (rounded down), 80 a line."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    per = bp // records
    with open(path, "wb") as fh:
        for r in range(records):
            fh.write(f">chr{r + 1}\n".encode())
            for s in range(0, per, 80 * 100_000):
                block = letters[rng.integers(0, 4, min(80 * 100_000, per - s))].tobytes()
                fh.write(b"\n".join(block[i: i + 80] for i in range(0, len(block), 80)) + b"\n")
    return per * records


#: packages whose import time is reported wherever they are first imported
_PACKAGES = ("torch", "triton", "numpy", "safetensors", "h5py", "click", "tqdm", "lightning", "sklearn", "pandas",
             "matplotlib", "mamba_genome.kernels", "mamba_genome.cli")


def top_imports(stderr: str, n: int = 12) -> dict:
    """From a ``-X importtime`` log: the ``n`` slowest top-level imports and the packages of
    ``_PACKAGES`` that were imported at all (cumulative ms)."""
    top, packages = [], {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line[len("import time:"):].split("|")
        if not cum.strip().isdigit():   # the header
            continue
        ms = int(cum) / 1000
        if name.strip() in _PACKAGES:
            packages[name.strip()] = ms
        if not name.startswith("  "):
            top.append({"module": name.strip(), "cumulative_ms": ms})
    return {"top_level": sorted(top, key=lambda r: -r["cumulative_ms"])[:n], "packages_ms": packages}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="7m")
    ap.add_argument("--bp", type=int, default=None, help="bases of the synthetic FASTA [100 Mbp; --smoke 0.2]")
    ap.add_argument("--gen-length", type=int, default=4096, help="bases per sample for generate")
    ap.add_argument("--gen-batches", default="64,256,1024", help="samples per batch for generate")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 0.2 Mbp, CPU, one thread")
    ap.add_argument("--workdir", default=None, help="where the FASTA, store and model go [a temp dir]")
    ap.add_argument("--json", default=None, help="[default: $OUT/bench_inference.json if $OUT is set]")
    ap.add_argument("--pycache-prefix", default=None,
                    help="time the commands with their bytecode compiled into this directory first "
                         "(PYTHONPYCACHEPREFIX; compileall of the stdlib and of torch's site-packages). For an "
                         "environment whose packages hold no .pyc files and that does not write them "
                         "(PYTHONDONTWRITEBYTECODE=1, as on the GPU image): there every process compiles each "
                         "module it imports from source (2.9 s of a 5 s start-up, H200 host, 2026-12-02), "
                         "where a pip-installed torch has its .pyc files")
    args = ap.parse_args(argv)
    if args.pycache_prefix:
        import sysconfig

        prefix = str(Path(args.pycache_prefix).resolve())
        os.environ["PYTHONPYCACHEPREFIX"] = prefix
        dirs = [sysconfig.get_paths()["stdlib"], os.path.dirname(os.path.dirname(torch.__file__))]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *dirs], env=_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"bytecode of {', '.join(dirs)} compiled into {prefix} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.smoke:   # one intra-op thread: a busy small CPU runs tiny ops many times faster
        args.preset, args.gen_length, args.gen_batches = "tiny", 128, "16"
        args.bp = args.bp or 200_000
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
    args.bp = args.bp or 100_000_000
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-inference-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "preset": args.preset, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                           time.gmtime())}

    # 1. forward at 2^20 (bench_embed's timing)
    from bench_embed import bench_config

    torch.manual_seed(0)
    model = MambaLM(MambaConfig.from_preset(args.preset)).to(device).eval()
    model.preset = args.preset
    length = 2 ** (10 if args.smoke else 20)
    prec = "bf16" if device.type == "cuda" else "fp32"
    result["forward"] = bench_config(model, device, prec, 1, length, 2, 5)
    result["forward_engine"] = bench_config(model, device, prec, 1, length, 1, 3, api=True)
    print(f"forward {args.preset} {prec} L={length}: {result['forward']['mbp_per_s']:.3f} Mbp/s; through the "
          f"engine: {result['forward_engine']['mbp_per_s']:.3f} Mbp/s", flush=True)
    model_dir = save_model(model.cpu(), work / "model")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2. start-up
    tiny = work / "tiny.fa"
    write_random_fasta(tiny, 1000, records=1)
    dev = ["--device", "cuda" if device.type == "cuda" else "cpu"]
    embed = [sys.executable, "-m", "mamba_genome", "embed"]
    _wall(embed + [str(tiny), "--model", str(model_dir), "-o", str(work / "tiny.npy"), "-q"] + dev)  # warm caches
    t_torch, _ = _wall([sys.executable, "-c", "import torch"])
    t_start, _ = _wall(embed + [str(tiny), "--model", str(model_dir), "-o", str(work / "tiny.npy"), "-q"] + dev)
    _, proc = _wall([sys.executable, "-X", "importtime", "-m", "mamba_genome", "embed", str(tiny), "--model",
                     str(model_dir), "-o", str(work / "tiny.npy"), "-q"] + dev)
    result["startup"] = {"import_torch_s": t_torch, "embed_1kbp_s": t_start,
                         "pycache_prefix": args.pycache_prefix, "top_imports": top_imports(proc.stderr)}
    print(f"start-up: import torch {t_torch:.2f} s; embed of 1 kbp end to end {t_start:.2f} s", flush=True)

    # 3. embed end to end on the big FASTA
    big = work / "big.fa"
    bp = write_random_fasta(big, args.bp)
    cmd = embed + [str(big), "--model", str(model_dir), "-o", str(work / "big.npy"), "-q"] + dev
    t_first, _ = _wall(cmd)
    t_second, _ = _wall(cmd)
    result["embed_e2e"] = {"bp": bp, "first_run_s": t_first, "first_run_mbp_per_s": bp / t_first / 1e6,
                           "store_cached_s": t_second, "store_cached_mbp_per_s": bp / t_second / 1e6}
    print(f"embed {bp / 1e6:.1f} Mbp end to end: {t_first:.1f} s ({bp / t_first / 1e6:.2f} Mbp/s) with ingest; "
          f"{t_second:.1f} s ({bp / t_second / 1e6:.2f} Mbp/s) with the store cached", flush=True)

    # 4. generate
    from mamba_genome.workflows.generate import generate

    rows = []
    for b in (int(x) for x in args.gen_batches.split(",") if x):
        generate(model_dir, work / "warm.fa", length=64, num_samples=b, batch_size=b, device=str(device),
                 progress=False)
        r = generate(model_dir, work / "gen.fa", length=args.gen_length, num_samples=b, batch_size=b,
                     device=str(device), progress=False)
        rows.append({"batch": b, "length": args.gen_length, "seconds": r.seconds, "bases_per_s": r.bases_per_s,
                     "ms_per_step": r.seconds / args.gen_length * 1e3})
        print(f"generate B={b} L={args.gen_length}: {r.bases_per_s:,.0f} bases/s "
              f"({rows[-1]['ms_per_step']:.2f} ms a step)", flush=True)
    result["generate"] = rows

    out = args.json or (os.path.join(os.environ["OUT"], "bench_inference.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
