"""A verb whose optional dependency is missing fails in one line naming the exact `pip install 'refusal-edge[...]'`.

Each case runs the CLI in a subprocess where the module is made unimportable (``sys.modules[name] = None``), as in an
installation without that extra.
"""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from refusal_edge import cli
from refusal_edge.extras import EXTRA_FOR_MODULE, install_hint, missing_message

ENGINE = ["--engine", "http://127.0.0.1:9"]  # never reached: the missing httpx stops the verb first


def run_without(module: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    code = f"import sys; sys.modules[{module!r}] = None; from refusal_edge.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


CASES = [
    ("serve", "starlette", ["serve", "--port", "0"]),
    ("serve", "uvicorn", ["serve", "--port", "0"]),
    ("remote", "httpx", ["decide", *ENGINE, "hi"]),
    ("remote", "httpx", ["generate", *ENGINE, "hi"]),
    ("remote", "httpx", ["chat", *ENGINE]),
    ("remote", "httpx", ["serve", *ENGINE, "--port", "0"]),
    ("remote", "httpx", ["eval", *ENGINE, "data.jsonl", "--prompt-field", "prompt", "--label-field", "label"]),
    ("remote", "httpx", ["calibrate", *ENGINE, "data.jsonl", "--prompt-field", "prompt", "--label-field", "label",
                         "--target", "overall:tpr>=0.5"]),
    ("ray", "ray", ["eval", "data.jsonl", "--prompt-field", "prompt", "--label-field", "label", "--ray"]),
    ("train", "torch", ["train", "base", "data.jsonl", "--contrast", "data.jsonl", "--out", "out"]),
]


@pytest.mark.parametrize("extra, module, args", CASES, ids=[f"{c[2][0]}-{c[1]}" for c in CASES])
def test_a_missing_extra_is_one_line_naming_the_pip_command(tmp_path, extra, module, args):
    (tmp_path / "data.jsonl").write_text('{"prompt": "hi", "label": "respond"}\n')
    (tmp_path / "base").mkdir()
    result = run_without(module, args, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"needs {module}, which is not installed: pip install 'refusal-edge[{extra}]'" in lines[0]


def test_the_dispatcher_names_the_verb_and_keeps_a_traceback_for_an_unknown_module(monkeypatch):
    def needs(module):
        @click.command()
        def verb():
            __import__(module)
        return verb

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "no_such_module_anywhere", None)
    fake = type(sys)("fake_verbs")
    fake.plotting, fake.broken = needs("matplotlib"), needs("no_such_module_anywhere")
    monkeypatch.setitem(sys.modules, "fake_verbs", fake)
    monkeypatch.setattr(cli, "VERBS", {"plotting": ("fake_verbs:plotting", ""), "broken": ("fake_verbs:broken", "")})

    result = CliRunner().invoke(cli.main, ["plotting"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: refusal-edge plotting needs matplotlib, which is not installed: "
                                     "pip install 'refusal-edge[plot]'")
    # A module that no extra provides is a bug or a broken installation: it is not dressed up as a missing extra.
    result = CliRunner().invoke(cli.main, ["broken"])
    assert isinstance(result.exception, ModuleNotFoundError)


def test_eval_without_matplotlib_skips_the_plots_naming_the_plot_extra(monkeypatch, capsys, tmp_path):
    from refusal_edge.evaluate import cli as evaluate_cli, plots

    monkeypatch.setattr(plots, "available", lambda: False)
    assert evaluate_cli._plots_available() is False
    assert install_hint("plot") in capsys.readouterr().err


def test_messages_name_the_top_level_module_and_refuse_an_unknown_one():
    assert missing_message("starlette.routing", "x") == \
        "x needs starlette, which is not installed: pip install 'refusal-edge[serve]'"
    with pytest.raises(KeyError):
        missing_message("numpy", "x")  # a core dependency: no extra to name
    assert set(EXTRA_FOR_MODULE.values()) <= {"serve", "remote", "plot", "convert", "train", "ray"}
