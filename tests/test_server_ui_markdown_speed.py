"""The dials page's Markdown renderer is linear in its input (issue 35, row 7): the red team's inputs (`[a](`
repeated, backtick runs of every length, ...) render 1 MB in under a second of CPU, in node on a minimal DOM (the
browser tests in test_server_ui_markdown.py cover what it renders; this covers how long it takes)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[1] / "refusal_edge" / "server" / "static"
HARNESS = Path(__file__).with_name("markdown_node.js")
MB = 1_000_000


def ticks_of_every_length(size: int) -> str:
    out, k, length = [], 1, 0
    while length < size:
        out.append("`" * k + "x")
        length, k = length + k + 1, k + 1
    return "".join(out)


CASES = {  # name -> a source of about `size` characters
    "link openers": lambda size: "[a](" * (size // 4),
    "image openers": lambda size: "![a](" * (size // 5),
    "backtick runs of every length": ticks_of_every_length,
    "backtick pairs": lambda size: "`a``b" * (size // 5),
    "emphasis openers": lambda size: "*a " * (size // 3),
    "underscores": lambda size: "_a " * (size // 3),
    "nested brackets": lambda size: "[[[[a](b)" * (size // 9),
    "relative links": lambda size: "[a](b) " * (size // 7),
    "escapes": lambda size: "\\*a" * (size // 3),
    "plain text": lambda size: "word " * (size // 5),
}


def cpu_ms(sources: dict, tmp_path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH")
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(sources))
    done = subprocess.run([node, str(HARNESS), str(STATIC), str(cases)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_megabyte_of_hostile_markdown_renders_in_under_a_second_and_linearly(tmp_path):
    sources = {name: make(MB) for name, make in CASES.items()}
    scaled = ["link openers", "backtick runs of every length", "emphasis openers"]
    sources.update({f"{name} /16": CASES[name](MB // 16) for name in scaled})
    # the least of three runs: one run's garbage collection or JIT tier-up can double a case's time
    runs = [cpu_ms(sources, tmp_path) for _ in range(3)]
    spent = {name: min(run[name] for run in runs) for name in sources}
    slow = {name: ms for name, ms in spent.items() if ms > 1000}
    assert not slow, spent  # was: 324 s for `[a](` repeated to 1 MB
    # sixteen times the input, about sixteen times the time (quadratic would be 256x); measured linear runs reach 35x
    # (CPU time counts the garbage collector's threads), hence the wide margin on both sides
    for name in scaled:
        assert spent[name] < 100 * max(spent[f"{name} /16"], 5), spent
