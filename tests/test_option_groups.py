"""Options travel as one value per group (ModelOptions, PolicyOptions, Limits, SamplingParams, TrainOptions), and
train's flags are generated from TrainOptions' fields."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from refusal_edge.arguments import EngineTarget, ModelOptions, PolicyOptions
from refusal_edge.cli import VERBS, main
from refusal_edge.flags import FLAG, click_options, flag
from refusal_edge.options import model_options, policy_options


def callback(verb: str):
    return main.get_command(click.Context(main), verb).callback


@pytest.mark.parametrize("verb", ["serve", "generate", "decide", "chat", "eval", "calibrate", "train"])
def test_no_verb_takes_loose_model_or_policy_parameters(verb):
    params = inspect.signature(inspect.unwrap(callback(verb))).parameters
    assert not {"n_gpu_layers", "threads", "n_ctx", "remote", "policy_file", "thresholds"} & set(params), verb


def test_serve_takes_at_most_15_parameters():
    assert len(inspect.signature(inspect.unwrap(callback("serve"))).parameters) <= 15


def test_model_and_policy_options_reach_the_command_as_one_value_each():
    seen = {}

    @click.command()
    @policy_options
    @model_options
    def probe(policy_options, model_options):
        seen.update(policy=policy_options, model=model_options)

    args = ["--threads", "3", "--ctx", "512", "--engine", "http://h:1", "--engine-timeout", "5",
            "--threshold", "safety=0.3", "--bias", "respond=1", "--rule", "natural"]
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 0, result.output
    assert seen["model"] == ModelOptions(threads=3, n_ctx=512, remote=EngineTarget("http://h:1", timeout=5.0))
    assert seen["policy"] == PolicyOptions(None, "natural", ("safety=0.3",), ("respond=1",))


def test_naming_a_model_keeps_the_other_options():
    options = ModelOptions(threads=2)
    assert options.naming(None) is options
    assert options.naming(Path("m.gguf")) == ModelOptions("m.gguf", threads=2)


def test_serve_gets_its_model_options_limits_and_access_as_one_value_each(monkeypatch):
    from refusal_edge.errors import RefusalEdgeError
    from refusal_edge.policy import Policy
    from refusal_edge.server import app
    from refusal_edge.server.browser_guard import Access
    from refusal_edge.server.requests import Limits

    loaded, served = [], []

    class _Model:
        categories, default_policy, name = ("A",), Policy(), "fake"

        class tokenizer:
            metadata: dict = {}

        def close(self):
            pass

    def load(options):
        loaded.append(options)
        return _Model()

    def create_app(pool, settings):
        served.append(settings)
        raise RefusalEdgeError("stop here")

    monkeypatch.setattr(ModelOptions, "load", load)
    monkeypatch.setattr(app, "create_app", create_app)
    result = CliRunner().invoke(main, ["serve", "x.gguf", "--port", "0", "-t", "2", "--max-tokens", "7",
                                       "--max-messages", "3", "--parallel", "2", "--host", "127.0.0.2",
                                       "--allowed-origin", "http://a.example", "--allowed-host", "box.lan"],
                                env={"REFUSAL_EDGE_ORIGINS": "http://b.example"})
    assert result.exit_code == 1 and "stop here" in result.output
    assert loaded == [ModelOptions("x.gguf", threads=2)] * 2
    assert served[0].limits == Limits(max_tokens=7, max_messages=3)
    assert served[0].access == Access(origins=("http://a.example", "http://b.example"), hosts=("box.lan", "127.0.0.2"))


# --- flags generated from a settings dataclass -------------------------------------------------------------

@dataclass(frozen=True)
class _Settings:
    source: Path = field(metadata=flag(argument=True, metavar="SOURCE"))
    rank: int = field(default=8, metadata=flag("LoRA rank.", low=1))
    rate: float = field(default=0.5, metadata=flag(low=0, high=1, names=("-r", "--rate")))
    kind: str = field(default="a", metadata=flag(choices=("a", "b")))
    progress: bool = field(default=True, metadata=flag("No bars.", names=("-q", "--quiet"), negate=True))
    internal: float = 2.0  # no flag: never on the command line


def _settings_command(sink: list):
    @click.command()
    @click_options(_Settings, into="settings")
    def command(settings):
        sink.append(settings)

    return command


def test_a_settings_dataclass_becomes_flags_with_its_defaults_and_bounds():
    got = []
    command = _settings_command(got)
    assert CliRunner().invoke(command, ["src"]).exit_code == 0
    assert got[-1] == _Settings(Path("src"))
    result = CliRunner().invoke(command, ["src", "--rank", "4", "-r", "0.25", "--kind", "B", "-q"])
    assert result.exit_code == 0, result.output
    assert got[-1] == _Settings(Path("src"), rank=4, rate=0.25, kind="b", progress=False)
    for bad in (["src", "--rank", "0"], ["src", "--rate", "2"], ["src", "--kind", "c"], ["src", "--internal", "1"]):
        assert CliRunner().invoke(command, bad).exit_code == 2, bad
    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "LoRA rank." in help_text and "[default: 8; x>=1]" in help_text


def test_every_train_flag_comes_from_a_train_options_field(monkeypatch, tmp_path):
    from refusal_edge.convert.train import pipeline
    from refusal_edge.convert.train.options import TrainOptions

    command = main.get_command(click.Context(main), "train")
    flagged = {f.name for f in dataclasses.fields(TrainOptions) if FLAG in f.metadata}
    assert {p.name for p in command.params if p.name not in ("help", "as_json")} == flagged  # --json: output only
    seen = []
    monkeypatch.setattr(pipeline, "run", lambda options, log: seen.append(options) or {"paused_at": 0})
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    result = CliRunner().invoke(main, ["train", str(tmp_path), str(data), "--contrast", str(data), "-o",
                                       str(tmp_path / "run"), "--rank", "4", "--quant", "Q4_K_M", "-q", "-t", "1"])
    assert result.exit_code == 0, result.output
    assert seen == [TrainOptions(base=tmp_path, original=data, contrast=data, chat=None, out=tmp_path / "run",
                                 rank=4, quant="q4_k_m", progress=False, threads=1)]
    assert "train" in VERBS
