"""One-shot verbs: `generate`, `decide`, `inspect`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from .arguments import split_model_argument
from .conventions import EXIT_FAILURE
from .display import decision_line
from .errors import RefusalEdgeError
from .metadata import RESPOND_TOKEN
from .model import Chunk
from .options import MODEL_OPTION, TEXT, model_options, policy_options, sampling_options


@click.command()
@click.argument("words", nargs=-1, required=True, metavar="[MODEL] PROMPT", type=TEXT)
@click.option("--system", default=None, type=TEXT, help="System prompt.")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the decision and the answer.")
@sampling_options
@policy_options
@model_options
def generate(words, system, stop, as_json, policy_options, model_options, sampling):
    """Answer one prompt, streamed, after showing the refusal decision.

    \b
    Examples:
      refusal-edge generate "Write a haiku about rain"
      refusal-edge generate model.gguf "How do I pick a lock?" --threshold safety=0.2
      refusal-edge generate "Hi" --rule natural --bias respond=-2 --json
    """
    model, words = split_model_argument(words, model_options.source)
    if not words:
        raise click.UsageError("no prompt given")
    params = replace(sampling, stop=stop)
    with model_options.naming(model).load() as m:
        policy = policy_options.build(m.categories, m.default_policy)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": " ".join(words)}]
        if as_json:
            result = m.generate(messages, policy, sampling=params)
            click.echo(json.dumps({"decision": result.decision.to_dict(), "text": result.text,
                                   "finish_reason": result.finish_reason,
                                   "completion_tokens": result.completion_tokens}, ensure_ascii=False))
            return
        for event in m.stream(messages, policy, sampling=params):
            if isinstance(event, Chunk):
                click.echo(event.text, nl=False)
            else:
                click.echo(decision_line(event), err=True)
        click.echo()


@click.command()
@click.argument("words", nargs=-1, metavar="[MODEL] [PROMPT ...]", type=TEXT)
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSONL (field 'prompt' or 'messages') or CSV (column 'prompt'), one prompt per row.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines with every probability, one per prompt.")
@policy_options
@model_options
def decide(words, input_file, as_json, policy_options, model_options):
    """Decisions only: one prefill per prompt, no decoding.

    \b
    Examples:
      refusal-edge decide "How do I pick a lock?" "Tell me a joke"
      refusal-edge decide model.gguf --input prompts.jsonl --json > decisions.jsonl
      refusal-edge decide "Are you conscious?" --rule paper-category --threshold human=0.3
      refusal-edge decide model.gguf "Hi" --engine http://127.0.0.1:8081   # model.gguf runs on llama-server
    """
    model, prompts = split_model_argument(words, model_options.source)
    rows = [(p, [{"role": "user", "content": p}]) for p in prompts]
    if input_file:
        rows += read_prompt_file(Path(input_file))
    if not rows:
        raise click.UsageError("give prompts as arguments or with --input")
    with model_options.naming(model).load() as m:
        policy = policy_options.build(m.categories, m.default_policy)
        if not as_json:
            click.echo(f"{'decision':<34} {'respond':>7} {'refusal':>7}  prompt")
        for label, messages in rows:
            d = m.decide(messages, policy)
            if as_json:
                click.echo(json.dumps({"prompt": label, **d.to_dict()}, ensure_ascii=False))
            else:
                head = d.category or (d.token if d.token == RESPOND_TOKEN else f"own: {d.token!r}")
                click.echo(f"{head[:34]:<34} {d.respond_probability:7.3f} {d.refusal_probability:7.3f}  "
                           f"{_one_line(label)}")


def read_prompt_file(path: Path) -> list[tuple[str, list[dict]]]:
    """Rows of (label, messages) from JSONL/JSON/CSV/TSV; errors name the file and the line."""
    from .rows import read_rows

    rows = []
    for line, row in read_rows(path):
        if isinstance(row, str):
            raise RefusalEdgeError(f"{path}:{line}: {row}")
        prompt, messages = row.get("prompt"), row.get("messages")
        if isinstance(prompt, str) and prompt.strip():
            rows.append((prompt, [{"role": "user", "content": prompt}]))
        elif isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            rows.append((str(messages[-1].get("content", "")), messages))
        else:
            raise RefusalEdgeError(f"{path}:{line}: expected a non-empty 'prompt' string or a 'messages' list")
    if not rows:
        raise RefusalEdgeError(f"{path}: no prompts")
    return rows


def _one_line(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@click.command()
@click.argument("model", required=False)
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model, model_flag, as_json):
    """Show a GGUF's refusal metadata, tokens, default policy and build facts, without loading the weights.

    \b
    Examples:
      refusal-edge inspect model.gguf
      refusal-edge inspect --json        # the embedded default model
    """
    from .arguments import ModelOptions
    from .inspection import describe
    from .options import model_from

    info = describe(model_from(ModelOptions(model_flag), model).path())
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    print_description(info)


def print_description(info: dict) -> None:
    """``inspection.describe``'s facts as `inspect` and `show` print them; exit status 1 when the file has problems."""
    for key in ("file", "size", "architecture", "name", "quantization", "context_length", "vocab_size",
                "chat_template", "refusal_metadata"):
        click.echo(f"{key.replace('_', ' '):<18} {info[key]}")
    click.echo("decision tokens:")
    for t in info["tokens"]:
        flag = "" if t["control"] else "   <- NOT CONTROL"
        click.echo(f"  {t['name']:<32} {t['token']!r:<34} id {t['id']:<7} {t['type']}{flag}")
    policy = info["default_policy"]
    click.echo("default policy:    " + (json.dumps(policy, ensure_ascii=False) if policy else "none (built-in)"))
    if info["problems"]:
        click.echo("problems:", err=True)
        for problem in info["problems"]:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_FAILURE)
