"""score --vcf: prefix-reuse LLRs equal independent full passes; VCF edge cases; outputs; VCF reader fuzz."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba_genome.api import GenomeModel
from mamba_genome.cli import main
from mamba_genome.data.tokenizer import encode, reverse_complement
from mamba_genome.errors import UserError
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.likelihood import target_log_probs
from mamba_genome.model.lm import MambaLM
from mamba_genome.variants import VariantScorer, encode_alleles, flank_lengths, read_alleles
from mamba_genome.variants.effect import DEFAULT_GRID
from mamba_genome.workflows.variants import TSV_COLUMNS, score_vcf

DATA = Path(__file__).parent / "data"
CONTIG = "K-12-MG1655"


@pytest.fixture()
def ref_fa(tmp_path):
    p = tmp_path / "ref.fa"
    shutil.copy(DATA / "ecoli_MG1655_3kb.fa", p)
    return p


def _full_pass_ll(lm, seqs: list[str]) -> np.ndarray:
    """log P(seq) over positions 1..L-1 of each window, from plain forwards of whole windows (no
    state), batched by length."""
    out = np.zeros(len(seqs))
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_len.setdefault(len(s), []).append(i)
    for idx in by_len.values():
        ids = torch.from_numpy(np.stack([encode(seqs[i]) for i in idx])).long()
        with torch.no_grad():
            lp, _ = target_log_probs(lm(ids[:, :-1]), ids[:, 1:])
        out[idx] = lp.double().sum(1).numpy()
    return out


def _windows(contig: str, p: int, ref: str, alt: str, window: int, grid: int = 1) -> tuple[str, str, str, str]:
    """The whole (forward ref, forward alt, reverse ref, reverse alt) windows of the definition in
    variants/effect.py: forward context from p rounded down to the grid (p where that runs off the
    contig's start), reverse from the REF end rounded up (the end where that runs off the contig)."""
    lf, rf = flank_lengths(window)
    e = p + len(ref)
    a = p - p % grid if p - p % grid - lf >= 0 else p
    ae = e + (-e) % grid if e + (-e) % grid + rf <= len(contig) else e
    fl, fr = contig[a - lf: p], contig[e: e + rf]
    rl, rr = contig[p - lf: p], contig[e: ae + rf]
    return (fl + ref + fr, fl + alt + fr, reverse_complement(rl + ref + rr), reverse_complement(rl + alt + rr))


@pytest.mark.parametrize("window,budget,batch,grid", [(31, None, 5, 1), (150, 64, None, 1), (150, 64, None, 16),
                                                      (64, None, 3, 64)],
                         ids=["W31-one-chunk-b5", "W150-chunked", "W150-chunked-grid16", "W64-b3-grid64"])
def test_prefix_reuse_equals_two_full_passes(lm, window, budget, batch, grid):
    """LLR from one shared prefix state + two suffixes == ll(alt window) - ll(ref window), both strands,
    for SNVs, an MNP, insertions, deletions and an N in the flank (fp32, 1e-5), with windows centred
    exactly (grid 1) or anchored on a grid, near the contig ends too."""
    rng = np.random.default_rng(3)
    contig = list("".join(rng.choice(list("ACGT"), 1200)))
    contig[600] = "N"
    contig = "".join(contig)
    specs = [(400, 1, "G"), (450, 1, "T"), (500, 2, "CA"), (550, 1, None), (598, 3, None), (700, 1, "ACGTA"),
             (750, 4, "A"), (603, 1, "N"), (window // 2 + 1, 1, "A"), (1200 - window + window // 2 - 2, 1, "C")]
    variants = []
    for p, rlen, alt in specs:
        ref = contig[p: p + rlen]
        if alt is None:  # an insertion after the REF base
            alt = ref + "TTG"
        variants.append((p, ref, alt))
    gm = GenomeModel(lm)
    sc = VariantScorer(gm, window=window, batch_size=batch, precision="fp32", grid=grid)
    if budget:
        sc.budget = budget     # forces several streamed chunks per window
    sc.set_contig("c", encode(contig))
    r, rl = encode_alleles([v[1] for v in variants])
    a, al = encode_alleles([v[2] for v in variants])
    fwd, rev = sc.score(np.array([v[0] for v in variants]), r, rl, a, al)
    wins = [_windows(contig, p, ref, alt, window, grid) for p, ref, alt in variants]
    ll = _full_pass_ll(lm, [w for ws in wins for w in ws]).reshape(-1, 4)
    np.testing.assert_allclose(fwd.llr, ll[:, 1] - ll[:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(rev.llr, ll[:, 3] - ll[:, 2], atol=1e-5, rtol=0)
    for i, (p, ref, alt) in enumerate(variants):
        rw = wins[i][0]
        # scored suffix bases: allele + right flank, minus N targets
        suffix = (alt + rw[len(rw) - flank_lengths(window)[1]:])
        assert fwd.alt_n[i] == sum(ch in "ACGT" for ch in suffix)
        assert fwd.ref_n[i] == sum(ch in "ACGT" for ch in ref + rw[len(rw) - flank_lengths(window)[1]:])


@pytest.mark.parametrize("window,budget,batch,grid", [(31, None, None, 1), (64, 64, 3, 1), (64, 64, 3, 32)],
                         ids=["W31-one-batch", "W64-chunked-b3", "W64-chunked-b3-grid32"])
def test_shared_windows_equal_full_passes_and_unshared(lm, window, budget, batch, grid):
    """Variants sharing a window start (3 ALTs at a site, an SNV and a deletion at one POS, an SNV
    at a deletion's last base, a duplicate, a REF that is not the contig) score as two full passes
    each (fp32, 1e-5) and as with share=False, with fewer forward positions."""
    rng = np.random.default_rng(5)
    contig = list("".join(rng.choice(list("ACGT"), 600)))
    contig[330] = "N"
    contig = "".join(contig)
    c = lambda p, n=1: contig[p: p + n]   # noqa: E731
    variants = [(200, c(200), a) for a in "ACGT" if a != c(200)]                 # a saturated site
    variants += [(250, c(250), "T" if c(250) != "T" else "A"), (250, c(250, 3), c(250)),   # SNV + deletion, one POS
                 (302, c(302), "G" if c(302) != "G" else "C"), (300, c(300, 3), c(300)),  # same REF end
                 (320, c(320), c(320) + "GG"), (320, c(320), c(320) + "GG"),       # a duplicate insertion
                 (325, "A" if c(325) != "A" else "C", "G"), (325, c(325), "G"),    # REF not the contig, same POS
                 (331, c(331), "A"), (400, c(400, 2), "TTT")]
    gm = GenomeModel(lm)
    r, rl = encode_alleles([v[1] for v in variants])
    a, al = encode_alleles([v[2] for v in variants])
    pos = np.array([v[0] for v in variants])
    out, positions = {}, {}
    for share in (True, False):
        sc = VariantScorer(gm, window=window, batch_size=batch, precision="fp32", share=share, grid=grid)
        if budget:
            sc.budget = budget
        sc.set_contig("c", encode(contig))
        out[share] = sc.score(pos, r, rl, a, al)
        positions[share] = sc.positions
    wins = [_windows(contig, p, ref, alt, window, grid) for p, ref, alt in variants]
    # the REF-is-not-the-contig variant: its ref window carries its own REF
    ll = _full_pass_ll(lm, [w for ws in wins for w in ws]).reshape(-1, 4)
    for share in (True, False):
        fwd, rev = out[share]
        np.testing.assert_allclose(fwd.llr, ll[:, 1] - ll[:, 0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(rev.llr, ll[:, 3] - ll[:, 2], atol=1e-5, rtol=0)
    for f in ("alt_sum", "ref_sum", "alt_n", "ref_n"):
        for strand in (0, 1):
            np.testing.assert_allclose(getattr(out[True][strand], f), getattr(out[False][strand], f), atol=1e-5)
    assert positions[True] < positions[False]


def test_plan_counts_positions_of_a_saturated_site(lm):
    """Three SNVs at one site run one prefix and four suffixes per strand instead of three and six."""
    from mamba_genome.variants.effect import plan_strand

    contig = encode("ACGT" * 64)
    r, rl = encode_alleles(["A", "A", "A"])
    a, al = encode_alleles(["C", "G", "T"])
    lf, rf = flank_lengths(64)
    for rc, (p_len, f) in ((False, (lf, rf)), (True, (rf, lf))):
        shared = plan_strand(contig, np.array([100] * 3), r, rl, a, al, 64, rc, max_rows=100)
        alone = plan_strand(contig, np.array([100] * 3), r, rl, a, al, 64, rc, max_rows=100, share=False)
        # a suffix is 1 + f bases, of which the last is only a target
        assert shared.positions == p_len + 4 * f
        assert alone.positions == 3 * p_len + 6 * f
        assert len(shared.key) == 1 and len(shared.row_group) == 4


def test_plan_counts_positions_of_one_grid_cell(lm):
    """16 SNVs in one 16-base cell of the grid: one prefix and one reference pass per strand, plus
    one alt row each (its lead, the ALT and the flank), padded to the batch's longest row."""
    from mamba_genome.variants.effect import anchors, plan_strand

    contig = encode("ACGT" * 64)
    pos = np.arange(96, 112)
    r, rl = encode_alleles(["ACGT"[p % 4] for p in pos])
    a, al = encode_alleles(["ACGT"[(p + 1) % 4] for p in pos])
    lf, rf = flank_lengths(64)
    np.testing.assert_array_equal(anchors(pos, rl, 256, 64, 16, rc=False), 96)
    np.testing.assert_array_equal(anchors(pos, rl, 256, 64, 16, rc=True), 112)
    fwd = plan_strand(contig, pos, r, rl, a, al, 64, False, max_rows=100, grid=16)
    rev = plan_strand(contig, pos, r, rl, a, al, 64, True, max_rows=100, grid=16)
    assert len(fwd.key) == len(rev.key) == 1 and len(fwd.row_group) == len(rev.row_group) == 17
    # forward: longest row = 15 lead + 1 + rf; reverse: REF ends 97..112 -> anchor 112, lead 15
    assert fwd.positions == lf + 17 * (15 + 1 + rf - 1)
    assert rev.positions == rf + 17 * (15 + 1 + lf - 1)
    # near the contig's ends the anchor falls back to the variant itself
    assert anchors(np.array([40]), np.array([1]), 256, 64, 64, rc=False)[0] == 40
    assert anchors(np.array([200]), np.array([1]), 256, 64, 64, rc=True)[0] == 201


def test_identical_alleles_score_zero(lm):
    gm = GenomeModel(lm)
    sc = VariantScorer(gm, window=64, precision="fp32")
    contig = "ACGT" * 100
    sc.set_contig("c", encode(contig))
    r, rl = encode_alleles(["G", "GT"])
    fwd, rev = sc.score(np.array([102, 102]), r, rl, r, rl)
    np.testing.assert_array_equal(fwd.llr, 0.0)
    np.testing.assert_array_equal(rev.llr, 0.0)


def _read_tsv(path):
    import pandas as pd

    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"llr": str})


def test_score_vcf_tsv_statuses_order_and_values(lm, model_dir, ref_fa, tmp_path):
    out = tmp_path / "v.tsv"
    res = score_vcf(DATA / "variants.vcf", ref_fa, model_dir, out, window=64, device="cpu", precision="fp32",
                    progress=False)
    df = _read_tsv(out)
    assert list(df.columns) == TSV_COLUMNS
    assert df["id"].tolist() == ["snv1", "multi", "multi", "del3", "ins2", "badref", "nocontig", "leftedge",
                                 "rightedge", "symbolic", "mnp", "star", "star", "lower"]
    assert df["alt"].tolist()[1:3] == ["A", "G"]
    assert df["status"].tolist() == ["ok", "ok", "ok", "ok", "ok", "ref_mismatch", "unknown_contig",
                                     "window_off_contig", "window_off_contig", "unsupported_allele", "ok", "ok",
                                     "unsupported_allele", "ok"]
    bad = df["status"] != "ok"
    assert (df.loc[bad, "llr"] == "").all() and (df.loc[~bad, "llr"] != "").all()
    assert res.counts == {"ok": 8, "ref_mismatch": 1, "unknown_contig": 1, "window_off_contig": 2,
                          "unsupported_allele": 2}
    assert res.records == 12 and res.alleles == 14
    problems = "\n".join(res.problems())
    assert "K-12-MG1655:501 G>A" in problems and "chrZ:100 A>C" in problems
    # values: the averaged LLR of the SNV equals the mean of two strands' full passes
    contig = "".join(ref_fa.read_text().split("\n")[1:])
    ll = _full_pass_ll(lm, list(_windows(contig, 100, "T", "C", 64, DEFAULT_GRID)))    # the CLI's default grid
    f, r = ll[1] - ll[0], ll[3] - ll[2]
    row = df.iloc[0]
    assert float(row["llr_forward"]) == pytest.approx(f, abs=2e-5)
    assert float(row["llr_reverse"]) == pytest.approx(r, abs=2e-5)
    assert float(row["llr"]) == pytest.approx((f + r) / 2, abs=2e-5)
    # lowercase REF/ALT score like uppercase ones; the per-base value of an SNV is llr / (1 + right flank)
    low = df[df["id"] == "lower"].iloc[0]
    assert float(low["llr_per_base"]) == pytest.approx(float(low["llr"]) / (1 + flank_lengths(64)[1]), abs=1e-5)


def _same_up_to_rounding(a: list[str], b: list[str], atol: float = 2e-5) -> bool:
    """Lines equal field by field, numbers to ``atol`` (batches of other sizes round differently)."""
    import re

    num = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if num.sub("#", x) != num.sub("#", y):
            return False
        if any(abs(float(u) - float(v)) > atol for u, v in zip(num.findall(x), num.findall(y))):
            return False
    return True


@pytest.mark.parametrize("ext", ["tsv", "vcf"])
def test_small_chunks_queued_ahead_give_the_same_output(model_dir, ref_fa, tmp_path, ext):
    """Chunks of 2 alleles (each queued before the previous one is read back; multi-allelic records
    stay whole) write the same file as one chunk, with and without window sharing."""
    outs = []
    for chunk, share in ((None, True), (2, True), (3, False)):
        o = tmp_path / f"o{chunk}{share}.{ext}"
        score_vcf(DATA / "variants.vcf", ref_fa, model_dir, o, window=64, device="cpu", precision="fp32",
                  progress=False, chunk_alleles=chunk, share=share)
        outs.append([x for x in o.read_text().splitlines() if not x.startswith("##")])
    assert _same_up_to_rounding(outs[0], outs[1])
    if ext == "tsv":   # unshared: the same scores to the printed digits (same conditionals)
        a = _read_tsv(tmp_path / "oNoneTrue.tsv")
        b = _read_tsv(tmp_path / "o3False.tsv")
        ok = a["status"] == "ok"
        np.testing.assert_allclose(a.loc[ok, "llr"].astype(float), b.loc[ok, "llr"].astype(float), atol=2e-5)


def test_score_vcf_annotated_vcf(model_dir, ref_fa, tmp_path):
    import pysam

    tsv, vcf = tmp_path / "v.tsv", tmp_path / "v.vcf.gz"
    score_vcf(DATA / "variants.vcf", ref_fa, model_dir, tsv, window=64, device="cpu", precision="fp32",
              progress=False)
    score_vcf(DATA / "variants.vcf", ref_fa, model_dir, vcf, window=64, device="cpu", precision="fp32",
              progress=False)
    with gzip.open(vcf, "rb") as fh:
        assert fh.read(2)      # bgzip is gzip-compatible
    df = _read_tsv(tsv)
    vf = pysam.VariantFile(str(vcf))
    assert "MG_LLR" in vf.header.info and "log P(alt window) - log P(ref window)" in vf.header.info["MG_LLR"].description
    assert vf.header.info["MG_LLR"].number == "A"
    assert "MG_REF_MISMATCH" in vf.header.filters
    recs = list(vf)
    assert [r.id for r in recs] == list(dict.fromkeys(df["id"]))      # one record per input record, in order
    by_id = {r.id: r for r in recs}
    assert list(by_id["multi"].info["MG_LLR"]) == pytest.approx(
        [float(x) for x in df.loc[df["id"] == "multi", "llr"]], abs=1e-4)
    assert list(by_id["badref"].filter) == ["MG_REF_MISMATCH"]
    assert list(by_id["nocontig"].filter) == ["MG_UNKNOWN_CONTIG"]
    assert list(by_id["snv1"].filter) == ["PASS"] and by_id["snv1"].info["DP"] == 10
    star = by_id["star"].info["MG_LLR"]
    assert star[0] is not None and star[1] is None


def test_window_options_and_long_alleles(model_dir, ref_fa, tmp_path):
    vcf = tmp_path / "long.vcf"
    contig = "".join(ref_fa.read_text().split("\n")[1:])
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"{CONTIG}\t1001\tlongdel\t{contig[1000:1040]}\t{contig[1000]}\t.\t.\t.\n"
                   f"{CONTIG}\t1501\tsnv\t{contig[1500]}\tN\t.\t.\t.\n")
    res = score_vcf(vcf, ref_fa, model_dir, tmp_path / "o.tsv", window=64, device="cpu", progress=False,
                    both_strands=False)
    df = _read_tsv(tmp_path / "o.tsv")
    assert df["status"].tolist() == ["allele_too_long", "ok"]
    assert df["llr_reverse"].tolist() == ["", ""]              # forward strand only
    assert res.strands == 1
    with pytest.raises(UserError, match="--window"):
        score_vcf(vcf, ref_fa, model_dir, tmp_path / "o.tsv", window=4, device="cpu", progress=False)
    with pytest.raises(UserError, match="--grid"):
        score_vcf(vcf, ref_fa, model_dir, tmp_path / "o.tsv", grid=0, device="cpu", progress=False)
    with pytest.raises(UserError, match="unknown output type"):
        score_vcf(vcf, ref_fa, model_dir, tmp_path / "o.csv", device="cpu", progress=False)


def _one_error_line(result):
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_cli_vcf_and_chr_prefix_mismatch(model_dir, ref_fa, tmp_path):
    runner = CliRunner()
    out = tmp_path / "o.vcf"
    r = runner.invoke(main, ["score", "--vcf", str(DATA / "variants.vcf"), "--fasta", str(ref_fa), "-m",
                             str(model_dir), "-o", str(out), "--window", "64", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    warns = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert len(warns) == 4 and any("ref_mismatch" in w for w in warns)
    chr_vcf = tmp_path / "chr.vcf"
    chr_vcf.write_text((DATA / "variants.vcf").read_text().replace("K-12-MG1655", "chrK-12-MG1655")
                       .replace("chrZ", "chrY"))
    r = runner.invoke(main, ["score", "--vcf", str(chr_vcf), "--fasta", str(ref_fa), "-m", str(model_dir),
                             "-o", str(tmp_path / "x.tsv"), "--device", "cpu", "-q"])
    assert "chr prefix mismatch" in _one_error_line(r)
    assert not (tmp_path / "x.tsv").exists()
    r = runner.invoke(main, ["score", "--vcf", str(chr_vcf), "-m", str(model_dir), "-o", "x.tsv"])
    assert "--fasta" in _one_error_line(r)


def test_score_help_has_examples():
    r = CliRunner().invoke(main, ["score", "--help"])
    assert r.exit_code == 0
    assert "score --vcf calls.vcf.gz --fasta" in r.output and "--window" in r.output
    # the CLI's --grid default (a literal, so --help imports no torch) is the library's
    from mamba_genome.cli.score import score as score_cmd

    grid = next(o for o in score_cmd.params if o.name == "grid")
    assert grid.default == DEFAULT_GRID and "--grid" in r.output


# ------------------------------------------------------------------ VCF reader fuzz
_HEADER = "##fileformat=VCFv4.2\n##contig=<ID=c1,length=100>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
_field = st.sampled_from(["c1", "c2", "1", "0", "-5", "99999999999", "A", "ACGT", "<DEL>", "*", ".", "A,C", "AC,,G",
                          "PASS", "DP=3", "DP", "X=Y;Z", "", " ", "\x00", "é", "1e3"])
_line = st.lists(_field, min_size=0, max_size=10).map("\t".join)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                    HealthCheck.function_scoped_fixture])
@given(body=st.lists(_line, max_size=6).map("\n".join), header=st.booleans(),
       noise=st.binary(max_size=40), gz=st.booleans())
def test_fuzz_vcf_reader_parses_or_raises_one_user_error(tmp_path, capfd, body, header, noise, gz):
    """Any input ends in parsed records or one UserError (the CLI's one `error:` line); htslib prints nothing."""
    data = ((_HEADER if header else "") + body + "\n").encode("utf-8", "replace") + noise
    import pysam

    p = tmp_path / ("f.vcf.gz" if gz else "f.vcf")
    p.write_bytes(data)
    if gz:      # bgzip (what htslib reads); plain gzip gets its own one-line error
        raw = tmp_path / "raw.vcf"
        raw.write_bytes(data)
        pysam.tabix_compress(str(raw), str(p), force=True)
    try:
        chunk = read_alleles(p)
    except UserError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
    else:
        if chunk is not None:
            assert len(chunk.pos) == len(chunk.ref) == len(chunk.alt) == len(chunk.record) >= chunk.n_records
    captured = capfd.readouterr()
    assert captured.err == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefix_reuse_on_gpu_triton_path():
    """On a GPU (Triton kernels): fp32 prefix reuse == full passes; bf16 (the default there) tracks fp32."""
    torch.manual_seed(0)
    lm = MambaLM(MambaConfig.from_preset("1.4m")).cuda().eval()
    rng = np.random.default_rng(0)
    contig = "".join(rng.choice(list("ACGT"), 50_000))
    window, n = 1024, 256
    pos = np.sort(rng.choice(np.arange(2000, 48_000), n, replace=False))
    refs = [contig[p] for p in pos]
    alts = ["ACGT"[("ACGT".index(r) + 1 + int(rng.integers(3))) % 4] for r in refs]
    alts[:4] = [refs[0] + "GA", refs[1] + "T", refs[2], refs[3]]
    refs[2:4] = [contig[pos[2]: pos[2] + 3], contig[pos[3]: pos[3] + 2]]
    # the last 30 sites saturated: all three ALTs (shared prefix and reference pass)
    sat = [(p, contig[p], b) for p in pos[-30:] for b in "ACGT" if b != contig[p]]
    pos = np.concatenate([pos[:-30], [s[0] for s in sat]])
    refs, alts = refs[:-30] + [s[1] for s in sat], alts[:-30] + [s[2] for s in sat]
    gm = GenomeModel(lm)
    r, rl = encode_alleles(refs)
    a, al = encode_alleles(alts)
    out = {}
    for prec in ("fp32", "bf16"):
        sc = VariantScorer(gm, window=window, precision=prec)
        sc.set_contig("c", encode(contig))
        out[prec] = sc.score(pos, r, rl, a, al)
    alone = VariantScorer(gm, window=window, precision="fp32", share=False)
    alone.set_contig("c", encode(contig))
    f_alone, r_alone = alone.score(pos, r, rl, a, al)
    np.testing.assert_allclose(out["fp32"][0].llr, f_alone.llr, atol=2e-3, rtol=0)
    np.testing.assert_allclose(out["fp32"][1].llr, r_alone.llr, atol=2e-3, rtol=0)
    wins = [_windows(contig, p, x, y, window, sc.grid) for p, x, y in zip(pos[:16], refs, alts)]
    ids = [torch.from_numpy(encode(s)).long().cuda()[None] for ws in wins for s in ws]
    ll = []
    with torch.no_grad():
        for x in ids:
            lp, _ = target_log_probs(lm(x[:, :-1]), x[:, 1:])
            ll.append(float(lp.double().sum()))
    ll = np.array(ll).reshape(-1, 4)
    fwd, rev = out["fp32"]
    np.testing.assert_allclose(fwd.llr[:16], ll[:, 1] - ll[:, 0], atol=2e-3, rtol=0)
    np.testing.assert_allclose(rev.llr[:16], ll[:, 3] - ll[:, 2], atol=2e-3, rtol=0)
    b16 = (out["bf16"][0].llr + out["bf16"][1].llr) / 2
    f32 = (fwd.llr + rev.llr) / 2
    assert np.isfinite(b16).all()
    assert np.corrcoef(b16, f32)[0, 1] > 0.95


def test_reference_formats_give_the_same_scores(model_dir, ref_fa, tmp_path, monkeypatch):
    """Plain FASTA (pyfaidx), BGZF (pyfaidx + .gzi) and plain gzip (token store) references agree."""
    import pysam

    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))
    bgz, gz = tmp_path / "ref.bgz.fa.gz", tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(ref_fa), str(bgz), force=True)
    gz.write_bytes(gzip.compress(ref_fa.read_bytes()))
    vcf = tmp_path / "few.vcf"
    lines = (DATA / "variants.vcf").read_text().splitlines()
    vcf.write_text("\n".join(lines[:9]) + "\n")        # header + snv1, multi, del3, ins2
    outs = []
    for i, ref in enumerate((ref_fa, bgz, gz)):
        score_vcf(vcf, ref, model_dir, tmp_path / f"o{i}.tsv", window=64, device="cpu", precision="fp32",
                  progress=False)
        outs.append((tmp_path / f"o{i}.tsv").read_text())
    assert outs[0] == outs[1] == outs[2]
    assert len(outs[0].splitlines()) == 1 + 5
