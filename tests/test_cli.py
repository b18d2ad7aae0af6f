"""Every CLI verb and error path through click's CliRunner, plus one real terminal session in tmux."""

import json
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from refusal_edge import __version__
from refusal_edge.cli import main
from tiny_model import build_tiny_gguf

COMMON = ["--threads", "1", "--ctx", "256"]


def run(*args, input=None, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


def test_help_lists_the_verbs_and_version():
    result = run("--help")
    assert result.exit_code == 0
    for verb in ("chat", "decide", "generate", "inspect"):
        assert verb in result.output
    assert __version__ in run("--version").output
    for verb in ("chat", "decide", "generate", "inspect", "convert", "annotate", "quantize", "eval", "calibrate",
                 "serve"):
        assert "Examples:" in run(verb, "--help").output, verb


def test_decide_table_and_json(tiny_gguf):
    table = run("decide", tiny_gguf, "hello there", "the lazy dog", *COMMON, "--threshold", "safety=0")
    assert table.exit_code == 0, table.output
    rows = table.output.strip().splitlines()
    assert rows[0].startswith("decision") and len(rows) == 3
    assert all(r.startswith("Requests with safety concerns") for r in rows[1:])
    lines = run("decide", tiny_gguf, "hello", *COMMON, "--json").output.strip().splitlines()
    record = json.loads(lines[0])
    assert record["prompt"] == "hello" and set(record["probabilities"]) >= {"Humanizing requests"}
    assert 0 <= record["respond_probability"] <= 1 and record["rule"] == "per-category"


def test_decide_reads_jsonl_and_csv_and_names_bad_lines(tiny_gguf, tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "one"}\n\n{"messages": [{"role": "user", "content": "two"}]}\n')
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("prompt,other\nthree,x\n")
    out = run("decide", tiny_gguf, "--input", jsonl, *COMMON, "--json")
    assert [json.loads(x)["prompt"] for x in out.output.splitlines()] == ["one", "two"]
    assert "three" in run("decide", tiny_gguf, "--input", csv_file, *COMMON).output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    result = run("decide", tiny_gguf, "--input", bad, *COMMON)
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output


def test_generate_streams_after_the_decision(tiny_gguf):
    result = run("generate", tiny_gguf, "hello", *COMMON, "--max-tokens", "5", "--threshold", "human=0", "--json",
                 "--temperature", "0")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["decision"]["category"] == "Humanizing requests"
    assert data["completion_tokens"] == 5 and "[Humanizing" not in data["text"]
    plain = run("generate", tiny_gguf, "hello", *COMMON, "--max-tokens", "3", "--temperature", "0")
    assert plain.exit_code == 0 and "⟨respond⟩" in plain.output


def test_inspect(tiny_gguf, tmp_path):
    result = run("inspect", tiny_gguf)
    assert result.exit_code == 0
    assert "[Requests with safety concerns]" in result.output and "CONTROL" in result.output
    info = json.loads(run("inspect", tiny_gguf, "--json").output)
    assert info["architecture"] == "llama" and info["vocab_size"] > 300 and not info["problems"]
    plain = build_tiny_gguf(tmp_path / "plain.gguf", refusal_tokens="none")
    result = run("inspect", plain)
    assert result.exit_code == 1 and "not a refusal-token model" in result.output


def test_chat_on_a_pipe_changes_the_policy_live(tiny_gguf, tmp_path):
    script = "hello\n/threshold safety 0\nhello\n/policy\n/save {}\n/rule sometimes\n/quit\n".format(tmp_path / "p.toml")
    result = run("chat", tiny_gguf, *COMMON, "--max-tokens", "3", "--temperature", "0", input=script)
    assert result.exit_code == 0, result.output
    decisions = [line for line in result.output.splitlines() if line.startswith("⟨")]
    assert decisions[0].startswith("⟨respond⟩")
    assert decisions[1].startswith("⟨Requests with safety concerns⟩")
    assert re.search(r"Requests with safety concerns +threshold 0 ", result.output)
    assert '"Requests with safety concerns" = 0.0' in (tmp_path / "p.toml").read_text()
    assert "usage: /rule" in result.output


def test_chat_takes_the_command_lines_spelling_of_a_threshold(tiny_gguf):
    script = "/threshold safety=0\n/bias respond=-1.5\n/policy\n/threshold =0.5\n/quit\n"
    result = run("chat", tiny_gguf, *COMMON, "--max-tokens", "3", "--temperature", "0", input=script)
    assert result.exit_code == 0, result.output
    assert "Requests with safety concerns: threshold 0" in result.output
    assert "respond: bias -1.5" in result.output
    assert "usage: /threshold CATEGORY VALUE" in result.output  # "=0.5" names no category


@pytest.mark.parametrize("args, code, message", [
    (["decide", "{model}", "x", "--threshold", "cooking=0.3"], 2, "unknown category 'cooking'"),
    (["decide", "{model}", "x", "--threshold", "safety=2"], 2, "not a probability"),
    (["decide", "{model}", "x", "--threshold", "safety=high"], 2, "not a number"),
    (["decide", "{model}", "x", "--rule", "sometimes"], 2, "Invalid value for '--rule'"),
    (["decide", "{model}"], 2, "give prompts"),
    (["decide", "missing.gguf", "x"], 1, "model file not found"),
    (["decide", "{model}", "x", "--policy", "{missing}"], 2, "cannot read policy file"),
    (["generate", "{model}", "the quick brown fox " * 100], 1, "context holds"),
])
def test_errors_have_exit_codes_and_clear_messages(tiny_gguf, tmp_path, args, code, message):
    args = [a.format(model=tiny_gguf, missing=tmp_path / "none.toml") for a in args]
    result = run(*args, *COMMON)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_model_from_environment_and_from_the_hub_cache(tiny_gguf, tmp_path):
    env = {"REFUSAL_EDGE_MODEL": str(tiny_gguf)}
    assert run("decide", "hello", *COMMON, env=env).exit_code == 0
    # A hub file already in the local cache loads offline; one that is not gives a clear error.
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_gguf, snapshot / "tiny.gguf")
    (cache / "models--someone--tiny" / "refs").mkdir()
    (cache / "models--someone--tiny" / "refs" / "main").write_text("a" * 40)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    assert run("decide", "someone/tiny/tiny.gguf", "hello", *COMMON, env=env).exit_code == 0
    missing = run("decide", "someone/tiny/other.gguf", "hello", *COMMON, env=env)
    assert missing.exit_code == 1 and "not in the Hugging Face cache" in missing.output


def test_llama_cpp_logging_only_with_verbose(tiny_gguf):
    # A context beyond the training length makes llama.cpp warn: quiet still means quiet.
    quiet = subprocess.run([sys.executable, "-m", "refusal_edge.cli", "decide", str(tiny_gguf), "hi", "--threads", "1",
                            "--ctx", "1024"], capture_output=True, text=True)
    loud = run("decide", tiny_gguf, "hi", *COMMON, "--verbose")
    assert quiet.returncode == 0 and "llama" not in quiet.stdout + quiet.stderr
    assert "llama_model_loader" in loud.output or "llama_context" in loud.output


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_real_terminal_session_changes_a_threshold(tiny_gguf, tmp_path):
    session = f"refusal-edge-test-{int(time.time() * 1000)}"
    command = " ".join(shlex.quote(a) for a in [
        sys.executable, "-m", "refusal_edge.cli", "chat", str(tiny_gguf), *COMMON,
        "--max-tokens", "3", "--temperature", "0"])
    env = f"REFUSAL_EDGE_HISTORY={shlex.quote(str(tmp_path / 'history'))}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", f"env {env} {command}"],
                   check=True)
    try:
        screen = _wait_for(session, "/help for commands")
        _type(session, "hello")
        screen = _wait_for(session, "⟨respond⟩")
        _type(session, "/threshold safety 0")
        _type(session, "hello")
        screen = _wait_for(session, "⟨Requests with safety concerns⟩")
        assert screen.index("⟨respond⟩") < screen.index("⟨Requests with safety concerns⟩")
        _type(session, "/quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _type(session, text):
    subprocess.run(["tmux", "send-keys", "-t", session, "-l", text], check=True)
    subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)


def _wait_for(session, needle, timeout=60.0):
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session, "-S", "-200"],
                                capture_output=True, text=True).stdout
        if needle in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared on the terminal:\n{screen}")


HEAVY = ("torch", "transformers", "starlette", "uvicorn", "refusal_edge.convert")  # the server and convert load on demand


@pytest.mark.parametrize("verb", [None, "chat", "serve", "eval", "convert", "train"])
def test_runtime_and_cli_help_never_import_torch_the_server_or_convert(verb):
    """`--help` of every verb stays light; only `convert`/`train --help` may load the converter (never torch)."""
    args = ["--help"] if verb is None else [verb, "--help"]
    heavy = tuple(h for h in HEAVY if not (verb in ("convert", "train") and h == "refusal_edge.convert"))
    code = ("import sys, refusal_edge, refusal_edge.model, refusal_edge.cli_chat, refusal_edge.cli_oneshot\n"
            "from click.testing import CliRunner\nfrom refusal_edge.cli import main\n"
            f"result = CliRunner().invoke(main, {args!r})\n"
            "assert result.exit_code == 0 and 'Usage' in result.output, result.output\n"
            f"bad = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {heavy!r}))\n"
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ctrl_c_stops_the_answer_not_the_chat(tiny_model):
    from refusal_edge.cli_chat import ChatSession
    from refusal_edge.model import Chunk

    class Interrupted:
        """The real model, except that the user presses Ctrl-C after the first piece of text."""

        categories = tiny_model.categories
        engine = tiny_model.engine
        fit = staticmethod(tiny_model.fit)

        def stream(self, messages, policy, sampling):
            events = tiny_model.stream(messages, policy, sampling=sampling)
            yield next(events)
            yield Chunk("partial")
            raise KeyboardInterrupt

    from refusal_edge.sampling import SamplingParams

    session = ChatSession(Interrupted(), tiny_model.default_policy, SamplingParams(max_tokens=4), None, color=False)
    assert session.handle("hello") is True  # the session goes on
    assert session.history[-1]["role"] == "assistant" and session.history[-1]["content"] == "partial"
    session.model = tiny_model
    session.handle("and now?")
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
