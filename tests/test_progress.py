"""The progress display tells the truth: 100 % at the end, an ETA only after a warm-up, labelled by the job, plain
lines on a pipe (never carriage-return frames), silent with --quiet. A fake clock drives the timing."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import textwrap
import time

import pytest

from refusal_edge import progress
from refusal_edge.progress import PLAIN_INTERVAL, WARMUP_SECONDS, Progress, set_quiet, tqdm_class, track


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def loud():
    set_quiet(False)
    yield
    set_quiet(False)


def plain(**options):
    stream, clock = io.StringIO(), Clock()
    return stream, clock, dict(stream=stream, clock=clock, tty=False, tick=False, **options)


def test_it_reaches_100_percent_when_the_job_ends():
    stream, clock, options = plain()
    results = iter(range(30))
    # The order of eval's old loop: zip(keys, bar) stopped before the bar counted its last item (99/100).
    for key, result in track(zip(range(30), results), "scoring prompts", 30, unit="prompts", **options):
        clock.now += 1
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("scoring prompts: 30/30 prompts (100%)"), lines


def test_an_estimated_total_ends_at_100_percent_and_a_failure_says_it_stopped():
    stream, clock, options = plain()
    with Progress("quantizing model.gguf (q4_k_m)", 1000, unit="B", **options) as bar:
        bar.update(700)  # the size estimate was high
    assert "1000/1000 B (100%)" in stream.getvalue().splitlines()[-1]
    stream, clock, options = plain()
    with pytest.raises(KeyboardInterrupt):
        with Progress("training", 10, unit="steps", **options) as bar:
            bar.update(3)
            raise KeyboardInterrupt
    assert stream.getvalue().splitlines()[-1].startswith("training: 3/10 steps (30%)")
    assert stream.getvalue().splitlines()[-1].endswith("(stopped)")


def test_no_eta_before_the_warm_up_and_the_first_unit_is_not_in_the_rate():
    clock = Clock()
    bar = Progress("scoring prompts", 100, unit="prompts", stream=io.StringIO(), clock=clock, tty=False, tick=False)
    clock.now += 60  # the first prompt pays for the model load
    bar.update()
    for _ in range(5):
        clock.now += 0.5
        bar.update()
    assert "ETA" not in bar.text(clock.now) and bar.rate(clock.now) is None  # 2.5 s of steady work: too early
    clock.now += WARMUP_SECONDS
    bar.update()
    rate = bar.rate(clock.now)
    assert rate == pytest.approx(6 / (2.5 + WARMUP_SECONDS))  # the 60 s first prompt is not in it
    assert f"ETA {progress._clock_text(93 / rate)}" in bar.text(clock.now)


def test_a_pipe_hears_from_a_job_whose_units_take_longer_than_the_interval(monkeypatch):
    """A batch of prompts scored at once, a large tensor: no update for a while, and still a line every interval."""
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 1.0)  # lines differ by their elapsed seconds
    stream = io.StringIO()
    bar = Progress("scoring prompts", 2, unit="prompts", stream=stream, tty=False)
    time.sleep(3.6)  # no unit done
    bar.update(2)
    bar.finish()
    lines = stream.getvalue().splitlines()
    waiting = [line for line in lines if line.startswith("scoring prompts: 0/2 prompts (0%), 0:0")]
    assert len(waiting) >= 3 and len(set(waiting)) == len(waiting), lines  # the start, then one a second
    assert lines[-1].startswith("scoring prompts: 2/2 prompts (100%)")
    time.sleep(1.5)
    assert stream.getvalue().splitlines() == lines  # nothing after the end


def test_a_pipe_gets_plain_lines_every_few_seconds_and_a_terminal_one_redrawn_line():
    stream, clock, options = plain()
    bar = Progress("building the default model", 1000, unit="tensors", **options)
    for _ in range(1000):
        clock.now += 0.03  # 30 s in all
        bar.update()
    bar.finish()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 30 / PLAIN_INTERVAL <= len(lines) <= 30 / PLAIN_INTERVAL + 3, lines
    tty = io.StringIO()
    bar = Progress("building the default model", 10, stream=tty, clock=clock, tty=True, tick=False)
    for _ in range(10):
        clock.now += 1
        bar.update()
    bar.finish()
    assert tty.getvalue().count("\r") >= 10 and tty.getvalue().endswith("\n")


def test_the_label_is_the_job_and_quiet_silences_everything():
    stream, clock, options = plain()
    with Progress("writing tuned.gguf", 10, unit="B", **options) as bar:
        bar.update(10)
    assert all(line.startswith("writing tuned.gguf: ") for line in stream.getvalue().splitlines())
    set_quiet()
    stream, clock, options = plain()
    with Progress("writing tuned.gguf", 10, **options) as bar:
        bar.update(10)
    list(track(range(3), "scoring prompts", **options))
    assert stream.getvalue() == ""


def test_sizes_use_one_binary_unit():
    stream, clock, options = plain()
    bar = Progress("downloading owner/repo/model.gguf", 3 << 30, unit="B", **options)
    bar.update(3 << 29)
    assert "1.5/3.0 GiB (50%)" in bar.text(clock.now)


def test_a_library_drives_it_through_its_tqdm_class():
    stream, clock = io.StringIO(), Clock()
    cls = tqdm_class("downloading owner/repo/model.gguf")
    with cls(total=2048, initial=0, desc="model.gguf", unit="B", unit_scale=True) as bar:
        bar.stream, bar.tty = stream, False  # huggingface-hub gives no stream: stderr in real use
        bar.update(1024)
        bar.update(1024)
    assert stream.getvalue().splitlines()[-1].startswith("downloading owner/repo/model.gguf: 2.0/2.0 KiB (100%)")


SCRIPT = textwrap.dedent("""
    import time
    from refusal_edge import progress
    progress.PLAIN_INTERVAL = 0.05
    progress.TTY_INTERVAL = 0.01
    for item in progress.track(range(20), "scoring prompts", unit="prompts"):
        time.sleep(0.01)
""")


def test_a_real_pipe_gets_no_carriage_returns_and_a_pty_does():
    piped = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and piped.stderr.splitlines()[-1].startswith("scoring prompts: 20/20 prompts")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stderr=follower, stdout=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    shown = b"".join(chunks).decode()
    assert "\r" in shown and "20/20 prompts (100%)" in shown


def test_eval_scoring_on_a_pipe_ends_at_100_percent(tmp_path, tiny_model, capsys):
    """eval's scoring loop (zip of keys and results) must count its last result: it stopped at 99/100."""
    from refusal_edge.evaluate.data import Example
    from refusal_edge.evaluate.runner import score_examples
    from refusal_edge.evaluate.store import ScoreStore

    prompts = [f"prompt number {i}" for i in range(5)]
    examples = [Example(p, True, "Humanizing requests", None, "d.jsonl", i + 1) for i, p in enumerate(prompts)]
    with ScoreStore(tmp_path / "s.jsonl", "m") as store:
        score_examples(examples, store, lambda: tiny_model, system=None)
    err = capsys.readouterr().err
    assert "\r" not in err and "stopped" not in err
    assert err.splitlines()[-1].startswith("scoring prompts: 5/5 prompts (100%)"), err


def test_the_first_use_build_labels_itself_and_ends_at_100_percent_on_a_pipe(tmp_path, capsys):
    from test_default_model import N_EMBD, N_FF, tiny_delta
    from tiny_model import build_tiny_gguf

    from refusal_edge import default_model

    base = build_tiny_gguf(tmp_path / "base.gguf", refusal_tokens="none", n_embd=N_EMBD, n_ff=N_FF)
    default_model.assemble(base, tiny_delta(), tmp_path / "default.gguf")
    err = capsys.readouterr().err
    assert "\r" not in err and "stopped" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("building the default model: ") for line in lines), lines
    assert "(100%)" in lines[-1]


def test_a_display_its_job_dropped_stops_ticking(monkeypatch):
    import gc

    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.05)
    stream = io.StringIO()
    bar = Progress("training", 10, unit="steps", stream=stream, tty=False)
    bar.update(3)
    del bar  # a job that failed without closing it
    gc.collect()
    time.sleep(0.3)
    shown = stream.getvalue()
    time.sleep(1.2)
    assert stream.getvalue() == shown


def test_convert_names_its_steps_by_the_output_never_a_temporary_file(tmp_path):
    from click.testing import CliRunner
    from tiny_hf import write_tiny_hf

    from refusal_edge.cli import main

    hf = write_tiny_hf(tmp_path / "hf").root
    out = tmp_path / "one.gguf"
    result = CliRunner().invoke(main, ["convert", str(hf), "-o", str(out), "--quant", "q4_0", "-t", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("writing one.gguf (f16, to quantize): ") for line in lines), lines
    assert any(line.startswith("quantizing one.gguf (q4_0): ") and "(100%)" in line for line in lines), lines
    assert ".partial" not in result.stderr and "\r" not in result.stderr


def test_pull_shows_the_download_as_plain_lines_named_by_the_file(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from fake_hub import FakeHub
    from tiny_model import build_tiny_gguf

    from refusal_edge.cli import main

    content = build_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    with FakeHub({"someone/tiny": {"tiny.gguf": content}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        result = CliRunner().invoke(main, ["pull", "someone/tiny/tiny.gguf"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("downloading ")]
    assert lines and lines[-1].startswith("downloading someone/tiny/tiny.gguf: ") and "(100%)" in lines[-1], \
        result.stderr
    assert "\r" not in result.stderr
