"""`refusal-edge serve`: an OpenAI-compatible chat server with a refusal dial on every request.

Only the command lives here. Starlette and uvicorn are imported when it runs, so the rest of the CLI (and
`refusal-edge --help`) works without the ``serve`` extra.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

import click

from .. import settings
from ..answer_options import answer_engine_options
from ..catalog import name_of_metadata
from ..conventions import HOST_ENV, PORT_ENV
from ..options import model_from, model_options, policy_options
from .browser_guard import ORIGINS_ENV, Access, origins_from_env
from .requests import Limits

API_KEY_ENV = "REFUSAL_EDGE_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")  # every address of the machine: requests name one of them (browser_guard.py)


def limit_options(func):
    """--max-tokens, --max-messages, --max-body: what one request may ask, as one ``limits`` argument (a Limits)."""

    @click.option("--max-tokens", type=click.IntRange(1), default=settings.SERVER_MAX_TOKENS, show_default=True,
                  help="Largest max_tokens a request may ask for (also the default).")
    @click.option("--max-messages", type=click.IntRange(1), default=settings.SERVER_MAX_MESSAGES, show_default=True,
                  help="Most messages in one request.")
    @click.option("--max-body", type=click.IntRange(1024), default=settings.SERVER_MAX_BODY_BYTES, show_default=True,
                  help="Largest request body, in bytes.")
    @functools.wraps(func)
    def wrapper(*args, max_tokens, max_messages, max_body, **kwargs):
        kwargs["limits"] = Limits(max_body_bytes=max_body, max_messages=max_messages, max_tokens=max_tokens)
        return func(*args, **kwargs)

    return wrapper


def access_options(func):
    """--allowed-origin and --allowed-host (with $REFUSAL_EDGE_ORIGINS and --host itself): which web pages and Host
    names may reach the server, as one ``access`` argument (an Access)."""

    @click.option("--allowed-origin", "allowed_origins", multiple=True, metavar="ORIGIN",
                  help=f"A web origin whose pages may call this server (e.g. http://localhost:3000; '*' patterns as "
                       f"in OLLAMA_ORIGINS). Repeatable; also ${ORIGINS_ENV}, comma-separated. Other pages get HTTP "
                       f"403.")
    @click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
                  help="A Host name this server answers to besides loopback names and its own address (e.g. "
                       "mybox.lan; '*': any, which lets DNS-rebinding pages read it). Repeatable.")
    @functools.wraps(func)
    def wrapper(*args, allowed_origins, allowed_hosts, **kwargs):
        host = kwargs["host"]
        kwargs["access"] = Access(origins=(*allowed_origins, *origins_from_env(os.environ.get(ORIGINS_ENV))),
                                  hosts=(*allowed_hosts, *([host] if host not in WILDCARDS else [])))
        return func(*args, **kwargs)

    return wrapper


@click.command()
@click.argument("model", required=False)
@answer_engine_options
@model_options
@policy_options
@click.option("--host", default="127.0.0.1", show_default=True, envvar=HOST_ENV, show_envvar=True,
              help="Address to listen on. Anything but loopback lets other machines use the model: set --api-key.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8080, show_default=True, envvar=PORT_ENV,
              show_envvar=True, help="0: any free port.")
@click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True, default=None,
              help="Require 'Authorization: Bearer KEY' on /v1 requests.")
@click.option("--parallel", "-np", type=click.IntRange(1, settings.SERVER_MAX_PARALLEL), default=None,
              help="Requests served at once: one model instance (context, KV cache) per slot; others queue. "
                   "With --engine, requests passed to the engine at once [default: 1; with --engine, its slots].")
@click.option("--max-queue", type=click.IntRange(1), default=settings.SERVER_MAX_QUEUE, show_default=True,
              help="Requests that may wait for a slot; more get HTTP 503.")
@limit_options
@click.option("--model-name", default=None, help="Model id in responses, /v1/models and /api/tags [default: its name "
              "in `refusal-edge list`: general.name and the quantization].")
@click.option("--predict-decision/--no-predict-decision", default=None,
              help="Evaluate each slot's expected decision token with the prompt, saving a decode step when the policy "
                   "picks it (in-process only) [default: where it pays, timed once per machine: see `doctor`].")
@click.option("--ui/--no-ui", default=True, show_default=True,
              help="The page with live refusal dials at / (static files; it asks for the API key, if any).")
@access_options
@click.option("--refusal-message/--no-refusal-message", default=True, show_default=True,
              help="Also put a refused answer's text in OpenAI's message.refusal (content keeps it too).")
def serve(model, model_options, policy_options, host, port, api_key, parallel, max_queue, limits, model_name,
          predict_decision, ui, access, refusal_message, answer):
    """Serve MODEL over the OpenAI and Ollama chat APIs, with a refusal dial on every request.

    Also: /v1/moderations (OpenAI's shape; the model's refusal categories), /v1/refusal/decisions (the full
    decision per input, no generation), and a page with live refusal dials at / (--no-ui turns it off).

    Requests may carry a "refusal" object over the server's policy, e.g.
    {"refusal": {"thresholds": {"safety": 0.3}, "biases": {"respond": 1.0}}}; every response carries
    the decision (forced token, category, probabilities) in a "refusal" field, and in the first chunk
    when streaming.

    \b
    Examples:
      refusal-edge serve model.gguf --threshold safety=0.3
      refusal-edge serve model.gguf --parallel 2 --port 8000 --api-key secret
      refusal-edge serve model.gguf --engine http://gpu-box:8000 --engine-model org/model   # a refusal gateway
      refusal-edge serve --answer-engine http://127.0.0.1:11434/v1 --answer-model llama3.2  # guard mode
      curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "hi"}], "refusal": {"rule": "natural"}}'
    """
    # Before the model loads: without the serve extra this fails at once (the CLI names the pip command).
    from .app import ServerSettings, create_app
    from .run import bind, make_server, url_of
    from .slots import SlotPool

    if api_key is not None and not api_key.strip():
        raise click.UsageError("--api-key (or $REFUSAL_EDGE_API_KEY) is empty or blank: give a key, or leave it out "
                               "to serve without one")
    if host not in LOOPBACK and not api_key:
        click.echo(f"warning: listening on {host} without --api-key: anyone who can reach it can use the model",
                   err=True)
    sock = bind(host, port)  # before the model loads: a busy port fails in a second, not after a minute
    models = []
    model_options = replace(model_from(model_options, model), predict_decision=predict_decision)
    remote = model_options.remote
    try:
        models.append(model_options.load())
        first = models[0]
        policy = policy_options.build(first.categories, first.default_policy)
        if answer is not None:  # guard mode: one decision model, `parallel` answers streaming at once (guard.md)
            from .guard_mode import guard_slots

            models, parallel = guard_slots(first, answer, parallel, model_name)
        elif remote is not None:
            # One remote engine serves every slot (it is thread-safe); the slots only bound what is in flight.
            parallel = parallel or first.engine.concurrency
            models += [first] * (parallel - 1)
        else:
            parallel = parallel or 1
            models += [model_options.load() for _ in range(parallel - 1)]
        settings = ServerSettings(
            model_id=model_name or name_of_metadata(first.tokenizer.metadata, first.name), policy=policy,
            api_key=api_key, ui=ui, access=access, refusal_message=refusal_message, limits=limits,
        )
        app = create_app(SlotPool(models, max_queue), settings)
        on = f" on {first.engine.identity} at {remote.url}" if remote is not None else ""
        on += f", answers from {models[0].answer.label} ({answer.url})" if answer is not None else ""
        click.echo(f"refusal-edge: serving {first.name}{on} as {settings.model_id!r} "
                   f"({len(first.categories)} categories, rule {policy.rule}, {parallel} slot(s)) "
                   f"at {url_of(sock)}/v1 (Ollama's API at /api" + (f", the dials page at {url_of(sock)}/)" if ui else ")"),
                   err=True)
        try:
            make_server(app, log_level="info").run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly: that is success
            pass
    finally:
        sock.close()
        for loaded in {id(m): m for m in models}.values():
            loaded.close()
