"""BED reader: 0-based half-open regions, names, comments, and one-line errors with file:line."""
from __future__ import annotations

import pytest

from mamba_genome.data.bed import BedRegion, read_bed
from mamba_genome.errors import InputFileError, RegionError

LENGTHS = {"chr1": 1000, "chr2": 500}


def _bed(tmp_path, text):
    p = tmp_path / "r.bed"
    p.write_text(text)
    return p


def test_reads_regions_names_and_skips_headers(tmp_path):
    p = _bed(tmp_path, "track name=x\nbrowser position chr1:1-10\n# comment\n\n"
                       "chr1\t0\t100\tpeak1\t0\t+\nchr2\t10\t500\nchr1 5 6 .\r\n")
    regions = read_bed(p, LENGTHS)
    assert regions == [BedRegion("chr1", 0, 100, "peak1", 5, "+"), BedRegion("chr2", 10, 500, None, 6),
                       BedRegion("chr1", 5, 6, None, 7)]
    assert [r.id for r in regions] == ["peak1", "chr2:10-500", "chr1:5-6"]
    assert [r.length for r in regions] == [100, 490, 1]


def test_without_lengths_no_contig_check(tmp_path):
    assert read_bed(_bed(tmp_path, "chrX\t0\t10\n"))[0].contig == "chrX"


@pytest.mark.parametrize("text,exc,match", [
    pytest.param("chr1\t0\t10\nchr1\t5\n", InputFileError, r"r\.bed:2: expected at least 3 columns", id="two-columns"),
    pytest.param("# h\nchr1\tzero\t10\n", InputFileError, r"r\.bed:2: start and end must be integers", id="not-int"),
    pytest.param("chr1\t10\t10\n", RegionError, r"r\.bed:1: region chr1:10-10 is empty", id="empty"),
    pytest.param("chr1\t20\t10\n", RegionError, r"r\.bed:1: .* is empty", id="reversed"),
    pytest.param("chr1\t-1\t10\n", RegionError, r"r\.bed:1: start -1 is negative", id="negative"),
    pytest.param("chr1\t900\t1001\n", RegionError, r"r\.bed:1: .*ends past the end of 'chr1' \(length 1,000\)",
                 id="past-end"),
    pytest.param("chr1\t0\t10\nchrUn\t0\t10\n", RegionError, r"r\.bed:2: unknown contig 'chrUn'; known contigs: chr1, chr2",
                 id="unknown-contig"),
    pytest.param("track x\n# only comments\n", InputFileError, "no regions found", id="no-regions"),
])
def test_errors(tmp_path, text, exc, match):
    with pytest.raises(exc, match=match):
        read_bed(_bed(tmp_path, text), LENGTHS)


def test_missing_and_binary_file(tmp_path):
    with pytest.raises(InputFileError, match="no such BED file"):
        read_bed(tmp_path / "nope.bed")
    p = tmp_path / "bin.bed"
    p.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InputFileError, match="not a text file"):
        read_bed(p)
