"""Packaging: `kernels/` ships as `mamba_genome.kernels`, every package folder is listed."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _listed_packages() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("packages = ["):]
    block = block[: block.index("]")]
    return set(re.findall(r'"([\w.]+)"', block))


def _on_disk_packages() -> set[str]:
    found = set()
    for init in (ROOT / "mamba_genome").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        found.add(".".join(rel.parts))
    for init in (ROOT / "kernels").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT / "kernels")
        found.add(".".join(("mamba_genome", "kernels", *rel.parts)))
    return {p for p in found if "__pycache__" not in p}


def test_every_package_folder_is_listed_in_pyproject():
    missing = _on_disk_packages() - _listed_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_no_top_level_kernels_package_is_declared():
    assert "kernels" not in _listed_packages()


def test_kernels_importable_under_package_name():
    import mamba_genome.kernels as k

    assert callable(k.selective_scan) and callable(k.causal_conv1d)
    assert Path(k.__file__).resolve().parent.name == "kernels"
