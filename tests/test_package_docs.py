"""A package's docstring that lists its modules lists exactly the modules it has (convert/train/__init__ once named
an ``encode`` module that did not exist)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [p.parent for p in [*(ROOT / "refusal_edge").rglob("__init__.py"), *(ROOT / "convert").rglob("__init__.py")]
            if "Modules:" in (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "")]


def listed_modules(docstring: str) -> set[str]:
    """The names of "Modules: a (what it holds), b, c (...)." up to the sentence's end, parentheses dropped."""
    text = docstring.split("Modules:", 1)[1]
    text = re.sub(r"\([^()]*\)", "", text.replace("\n", " "))
    text = text.split(".")[0]
    return {name.strip() for name in text.split(",") if name.strip()}


def test_some_package_lists_its_modules():
    assert ROOT / "convert" / "train" in PACKAGES


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_listed_modules_are_the_modules(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
    assert listed_modules(docstring) == {p.stem for p in package.glob("*.py") if p.stem != "__init__"}


def test_the_list_is_read_as_written():
    assert listed_modules("Modules: a (x, y; z), b (``C``: d -> e), c, d.\nMore.") == {"a", "b", "c", "d"}
