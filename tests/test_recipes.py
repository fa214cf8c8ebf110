"""Data recipes: great apes (--dry-run only, never the network) and the S. aureus task."""
from __future__ import annotations

import gzip
import importlib.util
import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mamba_genome.data.labels import parse_manifest

ROOT = Path(__file__).parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "data_recipes" / name / "prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a recipe touched the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_great_apes_dry_run(tmp_path, capsys, no_network):
    apes = _load("great_apes")
    out = tmp_path / "apes"
    assert apes.main(["--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    for asm in ("hg38", "panTro6", "panPan3", "gorGor6", "ponAbe3"):
        assert f"https://hgdownload.soe.ucsc.edu/goldenPath/{asm}/bigZips/{asm}.fa.gz" in text
    assert "~938 MB" in text and "label\tfasta\tsplit\tcontigs" in text
    rows = apes.manifest_rows(out)
    assert len(rows) == 15
    human_train = next(r for r in rows if r[0] == "human" and r[2] == "train")[3].split(",")
    chimp_train = next(r for r in rows if r[0] == "chimpanzee" and r[2] == "train")[3].split(",")
    assert "chr2" in human_train and {"chr2A", "chr2B"} <= set(chimp_train) and "chr2" not in chimp_train
    held = {c for r in rows if r[2] != "train" for c in r[3].split(",")}
    assert held == {"chr19", "chr20", "chr21", "chr22"} and not held & set(human_train)


def test_great_apes_chromosomes_dry_run(tmp_path, capsys, no_network):
    apes = _load("great_apes")
    out = tmp_path / "small"
    assert apes.main(["--out", str(out), "--chromosomes", "chr21,22", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists() and "10 files" in text
    assert "https://hgdownload.soe.ucsc.edu/goldenPath/ponAbe3/chromosomes/chr22.fa.gz" in text
    assert "bigZips" not in text
    rows, how = apes.chromosome_rows(["chr21", "chr22"])  # both test chromosomes: tails held out instead
    assert len(rows) == 10 and {r[2] for r in rows} == {""} and "tail" in how
    assert "human\thg38/chr21.fa.gz\t" in text
    rows, how = apes.chromosome_rows(["chr2", "chr19", "chr21"])  # one per split: the chromosome split stays
    assert {(r[1], r[2]) for r in rows if r[0] == "chimpanzee"} == {
        ("panTro6/chr2A.fa.gz", "train"), ("panTro6/chr2B.fa.gz", "train"), ("panTro6/chr19.fa.gz", "val"),
        ("panTro6/chr21.fa.gz", "test")}
    apes.write_manifest(tmp_path / "manifest.tsv", rows)
    for name in {r[1] for r in rows}:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(">x\nACGT\n")
    assert {s.split for s in parse_manifest(tmp_path / "manifest.tsv")} == {"train", "val", "test"}
    with pytest.raises(SystemExit, match="chrX"):
        apes.main(["--out", str(out), "--chromosomes", "chrX", "--dry-run"])


def test_great_apes_download_resumes(tmp_path, monkeypatch):
    apes = _load("great_apes")
    payload = bytes(range(256)) * 40
    (tmp_path / "x.fa.gz.part").write_bytes(payload[:1000])
    seen = {}

    class Resp(io.BytesIO):
        status = 206

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def fake_urlopen(req, timeout=None):
        seen["range"] = req.headers.get("Range")
        return Resp(payload[1000:])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert apes.download("https://example.invalid/x.fa.gz", tmp_path / "x.fa.gz", len(payload), chunk=512) == len(payload)
    assert seen["range"] == "bytes=1000-" and (tmp_path / "x.fa.gz").read_bytes() == payload
    assert not (tmp_path / "x.fa.gz.part").exists()


@pytest.fixture()
def strains(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    src.mkdir()
    bac = _load("bacteria")
    for i, s in enumerate(bac.STRAINS):
        seq = "".join(rng.choice(list("ACGT"), 1000 + 10 * i))
        with gzip.open(src / f"{s}.fa.gz", "wt") as fh:
            fh.write(f">NC_{i} S. aureus {s}\n" + "\n".join(seq[j:j + 60] for j in range(0, len(seq), 60)) + "\n")
    return bac, src


def test_bacteria_dry_run_writes_nothing(strains, tmp_path, capsys, no_network):
    bac, src = strains
    out = tmp_path / "out"
    assert bac.main(["--src", str(src), "--out", str(out), "--dry-run"]) == 0
    assert not out.exists()
    assert "COL\tCOL.train.fa\ttrain" in capsys.readouterr().out


def test_bacteria_builds_split_fasta_and_manifest(strains, tmp_path):
    bac, src = strains
    out = tmp_path / "out"
    bac.main(["--src", str(src), "--out", str(out)])
    sources = parse_manifest(out / "manifest.tsv")
    assert len(sources) == 15 and {s.label for s in sources} == set(bac.STRAINS)
    original = gzip.open(src / "COL.fa.gz", "rt").read().split("\n", 1)[1].replace("\n", "")
    pieces = {}
    for split in ("train", "val", "test"):
        head, body = (out / f"COL.{split}.fa").read_text().split("\n", 1)
        pieces[split] = (head, body.replace("\n", ""))
    assert pieces["train"][0] == ">NC_0:0-700" and pieces["val"][0] == ">NC_0:700-800"
    assert pieces["test"][0] == ">NC_0:800-1000"
    assert pieces["train"][1] + pieces["val"][1] + pieces["test"][1] == original


def test_bacteria_missing_source(tmp_path):
    bac = _load("bacteria")
    with pytest.raises(SystemExit, match="missing strain FASTA"):
        bac.build(tmp_path, tmp_path / "out")
