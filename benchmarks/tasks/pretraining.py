"""Unlabelled pretraining FASTAs per task group: each task's own genome(s), training split only.

The paper's recipe (Gu & Dao 2023, Sec. 4.3): pretrain the LM on the genome, then fine-tune. Here a
*group* of tasks shares one LM, pretrained on sequence that holds no val or test base of any of
its tasks (their splits are the same blocks, so the train blocks are safe for all of them):

==========  =====================================  ============================================
group       tasks                                  pretraining sequence
==========  =====================================  ============================================
umaydis     coding_umaydis, splice_donor           U. maydis train blocks (50 kbp, 8:1:1)
bacteria    coding, start_codon                    E. coli MG1655, S. aureus N315, V. cholerae H1
                                                   train blocks (20 kbp)
apes        great_apes                             human's train runs (100-kbp human blocks) and
                                                   every other one of chimpanzee, gorilla, orangutan
species     species                                umaydis + bacteria + the human part of apes
order       order_short, order_long                their train windows
strain      strain                                 its train windows
==========  =====================================  ============================================

``prepare`` writes the genome groups (``<out>/pretrain/<part>.fa.gz``; the genomes do not travel
with the repository, these files do); the window groups are written from the tasks' windows.npz
where the LM is trained (:func:`write_group_fasta`). Every group's FASTA starts with two records,
``lm_val`` and ``lm_test`` (train-split sequence held out of LM training, for ``pretrain
--val-contigs/--test-contigs``), so no record of it is shorter than a pretraining window for the
split's sake.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np

from . import apes, coding, umaydis
from .common import WindowSet, genome_blocks, read_genome

GROUPS = {
    "umaydis": {"tasks": ["coding_umaydis", "splice_donor"], "parts": ["umaydis"], "seq_len": 1024},
    "bacteria": {"tasks": ["coding", "start_codon"], "parts": ["bacteria"], "seq_len": 1024},
    "apes": {"tasks": ["great_apes"], "parts": ["apes_human", "apes_other"], "seq_len": 1024},
    "species": {"tasks": ["species"], "parts": ["umaydis", "bacteria", "apes_human"], "seq_len": 1024},
    "order": {"tasks": ["order_short", "order_long"], "windows": True, "seq_len": 512},
    "strain": {"tasks": ["strain"], "windows": True, "seq_len": 1024},
}
HOLD_OUT_BP = 65_536  # bases of each of lm_val and lm_test
RECORD_BP = 200_000  # train runs are joined into records of at least this length


def group_of(task: str) -> str:
    for g, spec in GROUPS.items():
        if task in spec["tasks"]:
            return g
    raise KeyError(task)


def _train_runs(genome: dict[str, bytes], block: int):
    """Consecutive train blocks of each contig, as byte strings."""
    for contig, blocks in genome_blocks(genome, block).items():
        run = []
        for s, e, split in blocks:
            if split == "train":
                run.append((s, e))
            elif run:
                yield genome[contig][run[0][0]:run[-1][1]]
                run = []
        if run:
            yield genome[contig][run[0][0]:run[-1][1]]


def _records(pieces, prefix: str):
    """Join ``pieces`` into records of >= RECORD_BP; the first pieces, HOLD_OUT_BP each (at most a tenth of
    all), go to lm_val and lm_test."""
    pieces = list(pieces)
    hold = min(HOLD_OUT_BP, sum(map(len, pieces)) // 10)
    held = {"lm_val": [], "lm_test": []}
    out, cur, n_cur, i = [], [], 0, 0
    for p in pieces:
        for name in ("lm_val", "lm_test"):
            if not held[name] or sum(map(len, held[name])) < hold:
                held[name].append(p)
                break
        else:
            cur.append(p)
            n_cur += len(p)
            if n_cur >= RECORD_BP:
                out.append((f"{prefix}_{i}", b"".join(cur)))
                cur, n_cur, i = [], 0, i + 1
    if cur:
        out.append((f"{prefix}_{i}", b"".join(cur)))
    return [(name, b"".join(ps)) for name, ps in held.items()], out


def _write(path: Path, records, level: int = 6) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wb", compresslevel=level) as fh:
        for name, seq in records:
            fh.write(b">%s\n" % name.encode())
            for i in range(0, len(seq), 100):
                fh.write(seq[i:i + 100] + b"\n")
    tmp.replace(path)
    return {"records": len(records), "bases": int(sum(len(s) for _, s in records))}


def write_genome_parts(data: Path, out: Path, *, maf=None, parts=("umaydis", "bacteria", "apes_human", "apes_other"),
                       log=print) -> dict:
    """``<out>/pretrain/<part>.fa.gz`` for the genome groups; returns records and bases per part.

    Every part holds its own ``lm_val``/``lm_test`` records; :func:`write_group_fasta` keeps the
    first part's and drops the others' when it joins parts.
    """
    stats = {}
    d = Path(out) / "pretrain"
    for part in parts:
        if part == "umaydis":
            pieces = list(_train_runs(read_genome(Path(data) / umaydis.GENOME), umaydis.BLOCK))
        elif part == "bacteria":
            pieces = [p for rel in coding.GENOMES.values()
                      for p in _train_runs(read_genome(Path(data) / rel), coding.BLOCK)]
        else:
            runs = [r for r in apes.runs(apes.read_maf(maf or apes.DEBIAN_MAF)) if r[0] == "train"]
            if part == "apes_human":
                pieces = [r[2]["Hsap"] for r in runs]
            else:  # every other train run of each other ape (alternating): half the bytes to carry
                others = [c for c in apes.SPECIES if c != "Hsap"]
                pieces = [r[2][c] for i, c in enumerate(others) for r in runs[i % 2::2]]
        held, recs = _records(pieces, part)
        stats[part] = _write(d / f"{part}.fa.gz", held + recs)
        log(f"pretrain/{part}.fa.gz: {stats[part]['records']} records, {stats[part]['bases']:,} bp (train split only)")
    return stats


def held_out_bp(fasta: Path) -> int:
    """Length of the ``lm_val`` record (the first) of a pretraining FASTA."""
    with gzip.open(fasta, "rb") as fh:
        fh.readline()
        n = 0
        for line in fh:
            if line.startswith(b">"):
                break
            n += len(line.strip())
    return n


def write_group_fasta(group: str, tasks_dir: Path, dest: Path) -> Path:
    """The pretraining FASTA of ``group`` at ``dest`` (gzip), from the prepared parts or windows."""
    spec = GROUPS[group]
    tasks_dir = Path(tasks_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if spec.get("windows"):
        pieces = []
        for t in spec["tasks"]:  # those prepared
            if not (tasks_dir / t / "windows.npz").is_file():
                continue
            ws = WindowSet.load(tasks_dir / t)
            alphabet = np.frombuffer(b"-----ACGTN", dtype=np.uint8)
            pieces += [alphabet[row].tobytes() for row in ws.part("train")[0]]
        held, recs = _records(pieces, group)
        _write(dest, held + recs, level=1)  # written where the LM trains, read once: speed over size
        return dest
    srcs = [tasks_dir / "pretrain" / f"{p}.fa.gz" for p in spec["parts"]]
    missing = [s for s in srcs if not s.is_file()]
    if missing:
        from mamba_genome.errors import UserError

        raise UserError(f"{missing[0]}: missing; run `python -m benchmarks.tasks prepare` (it writes pretrain/)")
    if len(srcs) == 1:
        shutil.copyfile(srcs[0], dest)
        return dest
    # gzip members concatenate into one valid stream; the later parts' lm_val/lm_test are renamed to train
    with open(dest, "wb") as out:
        with open(srcs[0], "rb") as fh:
            shutil.copyfileobj(fh, out)
        for k, src in enumerate(srcs[1:], 1):
            with gzip.open(src, "rb") as fh:
                text = fh.read().replace(b">lm_val\n", b">%s_lmval\n" % str(k).encode()).replace(
                    b">lm_test\n", b">%s_lmtest\n" % str(k).encode())
            out.write(gzip.compress(text, compresslevel=1))
    return dest
