"""`refusal-edge chat`: an interactive, streamed, multi-turn chat with a live refusal dial."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from .answer_options import answer_engine_options
from .arguments import policy_setting
from .conventions import HISTORY_ENV
from .decision import assistant_message
from .display import decision_line, policy_summary
from .errors import PolicyError, RefusalEdgeError
from .model import Chunk
from .options import CONTEXT_OPTION, TEXT, error_text, model_from, model_options, policy_options, sampling_options
from .policy import RULES, Policy

HELP = """commands:
  /threshold CATEGORY VALUE   set a category's threshold (prefixes work: /threshold safety 0.3 or safety=0.3)
  /threshold VALUE            set the default (and binary) threshold
  /bias CATEGORY VALUE        add a logit bias to a category or to 'respond'
  /rule RULE                  {rules}
  /policy                     show the policy in force
  /policy FILE                load a policy (.toml or .json)
  /save FILE                  save the policy (.toml or .json)
  /reset                      forget the conversation
  /help                       this text
  /quit                       leave (Ctrl-D works too; Ctrl-C stops an answer)""".format(rules=" | ".join(RULES))


class ChatSession:
    """The conversation and the policy; commands change the policy between turns."""

    def __init__(self, model, policy: Policy, params, system: str | None, color: bool):
        self.model = model
        self.policy = policy
        self.params = params
        self.system = system
        self.color = color
        self.history: list[dict] = []

    def handle(self, line: str) -> bool:
        """Process one input line; False means leave."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line)
        self.answer(line)
        return True

    def command(self, line: str) -> bool:
        name, *args = line.split()
        try:
            if name in ("/quit", "/exit", "/q"):
                return False
            if name == "/help":
                click.echo(HELP)
            elif name == "/policy":
                if len(args) > 1:
                    raise PolicyError("usage: /policy [FILE.toml|FILE.json]")
                if args:
                    self.policy = Policy.load(Path(args[0]).expanduser(), self.model.categories)
                    click.echo(f"policy loaded from {args[0]}")
                click.echo(policy_summary(self.policy, self.model.categories))
            elif name == "/reset":
                self.history.clear()
                click.echo("conversation cleared")
            elif name == "/rule":
                if len(args) != 1 or args[0] not in RULES:
                    raise PolicyError(f"usage: /rule {'|'.join(RULES)}")
                self.policy = replace(self.policy, rule=args[0])
                click.echo(f"rule: {args[0]}")
            elif name == "/threshold":
                self.policy = self._set("threshold", args)
            elif name == "/bias":
                self.policy = self._set("bias", args)
            elif name == "/save":
                if len(args) != 1:
                    raise PolicyError("usage: /save FILE.toml|FILE.json")
                self.policy.save(Path(args[0]).expanduser())
                click.echo(f"policy saved to {args[0]}")
            else:
                click.echo(f"unknown command {name}; /help lists them")
        except (PolicyError, OSError) as exc:
            click.echo(click.style(f"error: {exc}", fg="red"), err=True)
        return True

    def _set(self, what: str, args: list[str]) -> Policy:
        # The words after the command are one --threshold/--bias value: /threshold safety 0.3 or safety=0.3
        policy, category, value = policy_setting(self.policy, what, " ".join(args), self.model.categories, f"/{what}")
        click.echo(f"default threshold: {value:g}" if category is None else f"{category}: {what} {value:g}")
        return policy

    def answer(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        try:
            # A cut frees a quarter of the context more than needed: the next turns then fit without another cut
            # and reuse the whole window's KV cache (benchmarks/window_reprefill.py measures what that saves).
            window = self.model.fit(messages, self.params.max_tokens, spare=self.model.engine.n_ctx // 4,
                                    option=CONTEXT_OPTION)
        except RefusalEdgeError as exc:
            self.history.pop()
            click.echo(click.style(f"error: {error_text(exc)}", fg="red"), err=True)
            return
        if window.notice:
            # The cut stays where it is for the next turns, so that they reuse the window's KV cache.
            del self.history[:window.dropped_messages]
            click.echo(click.style(window.notice, dim=True))
        decision, parts = None, []
        stream = self.model.stream(window.messages, self.policy, sampling=self.params)
        try:
            for event in stream:
                if isinstance(event, Chunk):
                    parts.append(event.text)
                    click.echo(event.text, nl=False)
                else:
                    decision = event
                    click.echo(decision_line(event, color=self.color))
        except KeyboardInterrupt:
            stream.close()
            click.echo(click.style(" [stopped]", dim=True), nl=False)
        except RefusalEdgeError as exc:
            self.history.pop()
            click.echo(click.style(f"error: {error_text(exc)}", fg="red"), err=True)
            return
        click.echo()
        if decision is not None:
            self.history.append(assistant_message("".join(parts), decision))


def _enable_readline() -> None:
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input still works
        return
    history = Path(os.environ.get(HISTORY_ENV, "~/.refusal_edge_history")).expanduser()
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    import atexit

    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline, path: Path) -> None:
    try:
        readline.set_history_length(1000)
        readline.write_history_file(path)
    except OSError:
        pass


@click.command()
@click.argument("model", required=False)
@click.option("--system", default=None, type=TEXT, help="System prompt.")
@sampling_options
@policy_options
@answer_engine_options
@model_options
def chat(model, system, policy_options, model_options, sampling, answer):
    """Chat with a refusal-token model and turn the refusal dial live.

    Before each answer a line shows the decision: the forced token, its category and the top
    probabilities. Type /help for the commands that change the policy. On a pipe, each line of
    stdin is one message.

    \b
    Examples:
      refusal-edge chat
      refusal-edge chat model.gguf --threshold safety=0.3 --temperature 0
      printf 'Hi\\n/threshold human 0.1\\nAre you alive?\\n' | refusal-edge chat
      refusal-edge chat --answer-engine http://127.0.0.1:11434/v1 --answer-model llama3.2   # guard mode
    """
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):  # a line that is not UTF-8 becomes U+FFFD, not the end of the session
        sys.stdin.reconfigure(errors="replace")
    m = model_from(model_options, model).load()
    if answer is not None:  # guard mode: m decides, the answer engine answers (guarded.py)
        try:
            m = answer.guard(m)
        except BaseException:
            m.close()
            raise
    with m:
        policy = policy_options.build(m.categories, m.default_policy)
        session = ChatSession(m, policy, sampling, system, color=sys.stdout.isatty())
        if interactive:
            _enable_readline()
            click.echo(f"refusal-edge chat · {m.name} · rule {policy.rule} · /help for commands")
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                click.echo()
                continue
            if not interactive and line.strip() and not line.startswith("/"):
                click.echo(f"> {line}")
            if not session.handle(line):
                break
