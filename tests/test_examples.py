"""The examples are run, so they never rot."""

import subprocess
import sys
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args):
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_assistant_example(tiny_gguf):
    out = run_example("assistant.py", tiny_gguf, "--threads", "1")
    assert out.count("> ") == 2


def test_scripted_chat_example(tiny_gguf):
    out = run_example("scripted_chat.py", tiny_gguf, "--threads", "1")
    assert "Humanizing requests: threshold 0.05" in out
    assert sum(line.startswith("⟨") for line in out.splitlines()) == 3
    assert "rule: natural" in out


def test_laptop_eval_example(tiny_gguf):
    out = run_example("laptop_eval.py", tiny_gguf, "--threads", "1")
    assert "report sections:" in out and "sweep" in out
    assert "[thresholds]" in out  # the calibrated policy file was written and printed
