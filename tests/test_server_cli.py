"""`refusal-edge serve` itself: options, startup errors, and a real server process on a free loopback port."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge.cli import main  # noqa: E402

STARTUP_S = 60.0


def test_help_names_the_refusal_dial_and_the_safe_defaults():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for words in ("--threshold", "--api-key", "REFUSAL_EDGE_API_KEY", "--parallel", "127.0.0.1", "--max-tokens",
                  "--no-ui", "/v1/moderations"):
        assert words in result.output


@pytest.mark.parametrize("flag, expected", [([], None), (["--predict-decision"], True), (["--no-predict-decision"], False)])
def test_predict_decision_reaches_every_slot_model(tiny_gguf, monkeypatch, flag, expected):
    from refusal_edge.arguments import ModelOptions
    from refusal_edge.errors import ModelLoadError

    seen = []

    def load(options):
        seen.append(options.predict_decision)
        raise ModelLoadError("stop here")

    monkeypatch.setattr(ModelOptions, "load", load)
    result = CliRunner().invoke(main, ["serve", str(tiny_gguf), "--port", "0", *flag])
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen == [expected]


@pytest.mark.parametrize("args, code, words", [
    (["missing.gguf"], 1, "model file not found: missing.gguf"),
    (["{gguf}", "--threshold", "violence=0.3"], 2, "unknown category 'violence'"),
    (["{gguf}", "--bias", "safety=lots"], 2, "'lots' is not a number"),
])
def test_startup_errors_are_one_clear_line(tiny_gguf, args, code, words):
    args = [a.format(gguf=tiny_gguf) for a in args]
    result = CliRunner().invoke(main, ["serve", *args, "--port", "0", "--threads", "1", "--ctx", "256"])
    assert result.exit_code == code
    assert words in result.output and "Traceback" not in result.output


def test_serve_runs_with_the_cli_policy_and_an_api_key_from_the_environment(tiny_gguf, tmp_path):
    log = tmp_path / "serve.log"
    env = {**os.environ, "REFUSAL_EDGE_API_KEY": "from-env"}
    args = [str(tiny_gguf), "--threads", "1", "--ctx", "256", "--parallel", "2", "--threshold", "1.0",
            "--threshold", "safety=0", "--model-name", "tiny-cli", "--predict-decision"]
    with serving(args, log, env) as url:
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
            assert http.get("/models").status_code == 401
            headers = {"Authorization": "Bearer from-env"}
            card = http.get("/models", headers=headers).json()["data"][0]
            assert card["id"] == "tiny-cli" and card["refusal"]["policy"]["threshold"] == 1.0
            reply = http.post("/chat/completions", headers=headers, json={
                "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}).json()
            page = http.get(url.removesuffix("/v1") + "/")
        assert reply["refusal"]["category"] == "Requests with safety concerns"
        assert reply["model"] == "tiny-cli"
        assert page.status_code == 200 and "dials.js" in page.text  # the page is on unless --no-ui
    assert "2 slot(s)" in log.read_text()


def _wait_for_url(log, process) -> str:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and process.poll() is None:
        started = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", log.read_text())
        if started and "Application startup complete" in log.read_text():
            return started.group(1)
        time.sleep(0.05)
    raise AssertionError(f"the server did not start:\n{log.read_text()}")


@contextlib.contextmanager
def serving(args: list[str], log, env: dict | None = None):
    """`refusal-edge serve ARGS` in a child process (on port 0): its /v1 URL; then a Ctrl-C, after which it must
    exit cleanly."""
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "refusal_edge.cli", "serve", *args, "--port", "0"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())
    try:
        yield _wait_for_url(log, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STARTUP_S)
        finally:
            process.kill()
    assert process.returncode == 0, log.read_text()
