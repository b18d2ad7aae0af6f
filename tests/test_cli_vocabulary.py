"""One option vocabulary across the verbs (-m/--model, -o/--output, -f/--force, -t/--threads with one default,
-q/--quiet, --json), the environment variables and exit codes that --help lists (checked against the code that
reads and exits), py.typed in the wheel, and typed keywords for load and the sampling options."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from refusal_edge.cli import VERBS, main
from refusal_edge.conventions import ENVIRONMENT, EXIT_CODES, EXIT_FAILURE, EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent
MODEL_VERBS = ("chat", "serve", "eval", "calibrate", "decide", "generate", "inspect", "doctor")


def command(verb: str) -> click.Command:
    return main.get_command(click.Context(main), verb)


def option(verb: str, name: str) -> click.Option | None:
    return next((p for p in command(verb).params if isinstance(p, click.Option) and name in p.opts), None)


@pytest.mark.parametrize("verb", MODEL_VERBS)
def test_every_verb_that_takes_a_model_takes_dash_m(verb):
    found = option(verb, "--model")
    assert found is not None and "-m" in found.opts, verb


# Each long spelling has its one short spelling wherever a verb has it.
SHORT = {"--model": "-m", "--output": "-o", "--force": "-f", "--threads": "-t", "--quiet": "-q"}


@pytest.mark.parametrize("verb", list(VERBS))
def test_one_spelling_per_idea(verb):
    for param in command(verb).params:
        if not isinstance(param, click.Option):
            continue
        for long, short in SHORT.items():
            if long in param.opts:
                assert short in param.opts, (verb, param.opts)
        if short_of := [o for o in param.opts if o in SHORT.values()]:
            assert {o for o in param.opts if o.startswith("--")} & {k for k, v in SHORT.items() if v == short_of[0]}, \
                (verb, param.opts)
        if param.name == "as_json":
            assert param.opts == ["--json"], (verb, param.opts)


def test_threads_default_to_every_core_on_every_verb():
    threads = [(verb, option(verb, "--threads")) for verb in VERBS if option(verb, "--threads") is not None]
    assert {"doctor", "chat", "serve", "eval", "train", "convert", "quantize"} <= {verb for verb, _ in threads}
    assert {(o.default, o.help) for _, o in threads} == {(None, "CPU threads [default: all cores].")}


def test_dash_m_names_the_model_and_every_word_is_a_prompt(tiny_gguf):
    result = CliRunner().invoke(main, ["decide", "-m", str(tiny_gguf), "hello", "there", "--json", "-t", "1",
                                       "--ctx", "256"])
    assert result.exit_code == EXIT_OK, result.output
    assert [json.loads(line)["prompt"] for line in result.output.splitlines()] == ["hello", "there"]
    shown = CliRunner().invoke(main, ["inspect", "-m", str(tiny_gguf), "--json"])
    assert shown.exit_code == EXIT_OK and json.loads(shown.output)["file"].endswith("tiny.gguf")


def test_a_positional_model_and_a_different_dash_m_are_a_usage_error(tiny_gguf):
    for verb in ("chat", "serve", "inspect"):
        result = CliRunner().invoke(main, [verb, str(tiny_gguf), "-m", "other.gguf"])
        assert result.exit_code == EXIT_USAGE and "two models given" in result.output, (verb, result.output)


# --- environment variables ---------------------------------------------------------------------------------

def source_files():
    for folder in ("refusal_edge", "convert"):
        for path in (ROOT / folder).rglob("*.py"):
            if "default_recipe" not in path.parts:
                yield path


def test_every_environment_variable_the_code_reads_is_in_the_table_and_in_help():
    from refusal_edge import conventions

    texts = {path: path.read_text(encoding="utf-8") for path in source_files()}
    named = {n for text in texts.values() for n in re.findall(r"\bREFUSAL_EDGE_[A-Z_]+\b", text)}
    assert {n for n in named if not n.endswith("_")} == {n for n in ENVIRONMENT if n.startswith("REFUSAL_EDGE_")}
    elsewhere = [text for path, text in texts.items() if path.name != "conventions.py"]
    constants = {value: name for name, value in vars(conventions).items() if name.endswith("_ENV")}
    for variable in ENVIRONMENT:  # read somewhere: by its name, or through the constant conventions.py gives it
        spelled = [f'"{variable}"'] + ([rf"\b{constants[variable]}\b"] if variable in constants else [])
        assert any(re.search(s, text) for s in spelled for text in elsewhere), f"{variable} is read nowhere"
    help_text = CliRunner().invoke(main, ["--help"]).output
    assert all(name in help_text for name in ENVIRONMENT)


def test_the_cli_docs_list_every_variable_and_exit_code():
    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in docs for name in ENVIRONMENT)
    assert all(f"| {code} |" in docs for code in EXIT_CODES)


def test_serve_takes_host_and_port_from_the_environment(monkeypatch):
    from refusal_edge.server import run

    bound = []

    def bind(host, port):
        bound.append((host, port))
        raise click.ClickException("stop here")

    monkeypatch.setattr(run, "bind", bind)
    env = {"REFUSAL_EDGE_HOST": "127.0.0.2", "REFUSAL_EDGE_PORT": "8123", "REFUSAL_EDGE_API_KEY": "k"}
    result = CliRunner().invoke(main, ["serve", "x.gguf"], env=env)
    assert "stop here" in result.output and bound == [("127.0.0.2", 8123)]
    bad = CliRunner().invoke(main, ["serve", "x.gguf"], env={"REFUSAL_EDGE_PORT": "http"})
    assert bad.exit_code == EXIT_USAGE and "--port" in bad.output


# --- exit codes -------------------------------------------------------------------------------------------

def test_the_exit_code_table_is_what_the_cli_returns(tiny_gguf, monkeypatch):
    assert set(EXIT_CODES) == {EXIT_OK, EXIT_FAILURE, EXIT_USAGE}
    assert (click.UsageError.exit_code, click.ClickException.exit_code) == (EXIT_USAGE, EXIT_FAILURE)
    runner = CliRunner()
    assert runner.invoke(main, ["inspect", str(tiny_gguf)]).exit_code == EXIT_OK
    assert runner.invoke(main, ["decide", "--no-such-option"]).exit_code == EXIT_USAGE
    assert runner.invoke(main, ["decide", str(tiny_gguf), "hi", "--top-p", "0"]).exit_code == EXIT_USAGE
    missing = runner.invoke(main, ["decide", "-m", "missing.gguf", "hi"])
    assert missing.exit_code == EXIT_FAILURE and "model file not found" in missing.output

    from refusal_edge.arguments import ModelOptions

    def interrupted(options):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelOptions, "load", interrupted)
    assert runner.invoke(main, ["decide", str(tiny_gguf), "hi"]).exit_code == EXIT_FAILURE
    help_text = runner.invoke(main, ["--help"]).output
    assert all(f"  {code}  " in help_text for code in EXIT_CODES)


def test_verbs_that_exit_by_themselves_use_the_table():
    for path in source_files():
        for call in re.findall(r"sys\.exit\((.+)\)\s*$", path.read_text(encoding="utf-8"), re.M):
            assert call in ("EXIT_FAILURE", "main()", "main(sys.argv[1:])"), (path, call)


# --- typing -----------------------------------------------------------------------------------------------

def test_py_typed_ships_in_the_wheel():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setup["package-data"]["refusal_edge"]
    assert (ROOT / "refusal_edge" / "py.typed").is_file()


def test_typed_keywords_match_what_they_describe():
    from refusal_edge import RefusalModel
    from refusal_edge.aio import AsyncRefusalModel
    from refusal_edge.engines.llama import engine
    from refusal_edge.keywords import LoadOptions, SamplingOptions, StreamOptions
    from refusal_edge.sampling import SamplingParams

    llama = getattr(engine, "LlamaEngine", None) or engine.LlamaBackend
    keywords = {n for n, p in inspect.signature(llama.__init__).parameters.items() if p.kind == p.KEYWORD_ONLY}
    assert set(LoadOptions.__annotations__) == keywords
    assert set(SamplingOptions.__annotations__) == {f.name for f in dataclasses.fields(SamplingParams)}
    stream = inspect.signature(RefusalModel.stream).parameters
    assert set(StreamOptions.__annotations__) - set(SamplingOptions.__annotations__) == \
        {n for n, p in stream.items() if p.kind == p.KEYWORD_ONLY}
    annotations = {
        (RefusalModel.load, "options"): "Unpack[LoadOptions]",
        (RefusalModel.stream, "sampling_kwargs"): "Unpack[SamplingOptions]",
        (RefusalModel.generate, "sampling"): "Unpack[StreamOptions]",
        (AsyncRefusalModel.generate, "sampling"): "Unpack[StreamOptions]",
        (AsyncRefusalModel.stream, "options"): "Unpack[StreamOptions]",
    }
    for (function, name), expected in annotations.items():
        assert inspect.signature(function).parameters[name].annotation == expected, function


def test_the_writing_verbs_print_what_they_wrote_as_json(tmp_path):
    import gguf
    from tiny_model import build_tiny_gguf

    plain = build_tiny_gguf(tmp_path / "plain.gguf", write_metadata=False,
                            refusal_token_type=gguf.TokenType.USER_DEFINED)
    annotated, quantized = tmp_path / "annotated.gguf", tmp_path / "q8.gguf"
    result = CliRunner().invoke(main, ["annotate", str(plain), "-o", str(annotated), "--json"])
    assert result.exit_code == EXIT_OK, result.output
    written = json.loads(result.stdout)
    assert written["output"] == str(annotated) and written["bytes"] == annotated.stat().st_size
    assert written["refusal_tokens"]["[respond]"] == gguf.GGUFReader(annotated).fields[
        "tokenizer.ggml.tokens"].contents().index("[respond]")
    result = CliRunner().invoke(main, ["quantize", str(annotated), "-o", str(quantized), "--type", "q8_0", "-t", "1",
                                       "--json"])
    assert result.exit_code == EXIT_OK, result.output
    written = json.loads(result.stdout)
    assert (written["output"], written["type"]) == (str(quantized), "q8_0")
    assert written["refusal_tokens"]["[respond]"] > 0
