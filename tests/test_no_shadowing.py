"""No file of a script directory shadows an installed package or the standard library. A script's own folder is
``sys.path[0]`` (``python benchmarks/x.py``), pytest puts tests/ first, ``python -m`` the working directory: a
``benchmarks/kernels.py`` once made ``import transformers`` fail with "cannot import name 'CUDAProperties' from
'kernels'" (transformers 5 needs the `kernels` package)."""

import importlib.metadata
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_DIRS = [ROOT / "benchmarks", ROOT / "examples", ROOT / ".ci", ROOT / "tests", ROOT]
OWN = {"refusal_edge"}  # this project's own top-level package, found first on purpose


def importable_names(folder: Path) -> set[str]:
    """What ``import NAME`` finds in ``folder`` before site-packages: modules, and packages with an __init__.py (a
    folder without one is a namespace portion, which any regular package later on the path beats)."""
    names = {p.stem for p in folder.glob("*.py")}
    names |= {p.parent.name for p in folder.glob("*/__init__.py")}
    names |= {p.name.split(".")[0] for p in folder.iterdir() if p.suffix in (".so", ".pyd")}
    return names


def taken_names() -> set[str]:
    """Top-level import names of every installed distribution, and the standard library's modules."""
    return set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)


@pytest.mark.parametrize("folder", SCRIPT_DIRS, ids=lambda p: str(p.relative_to(ROOT)) or ".")
def test_no_script_directory_shadows_an_installed_package(folder):
    clashes = sorted((importable_names(folder) - OWN) & taken_names())
    assert clashes == [], f"{folder.relative_to(ROOT)}: rename {clashes} (they shadow installed packages)"


def test_the_check_sees_a_clash(tmp_path):
    (tmp_path / "json.py").write_text("")
    (tmp_path / "click").mkdir()
    (tmp_path / "click" / "__init__.py").write_text("")
    (tmp_path / "namespace_only").mkdir()
    assert {"json", "click"} <= importable_names(tmp_path) & taken_names()
    assert "namespace_only" not in importable_names(tmp_path)
