"""The click options of guard mode (`serve` and `chat`): --answer-engine URL and its companions, which reach the
command as one ``answer`` argument (a guarded.AnswerTarget, or None)."""

from __future__ import annotations

import functools

import click

from .guarded import REFUSAL_WRITERS, AnswerTarget

ANSWER_KEY_ENV = "REFUSAL_EDGE_ANSWER_API_KEY"


def answer_engine_options(func):
    """Place it above ``model_options``: it reads --engine-timeout, which bounds the answer engine's requests too."""

    @click.option("--answer-engine", "answer_url", default=None, metavar="URL",
                  help="Guard mode: MODEL decides every request; answers come from this OpenAI-compatible chat API "
                       "(Ollama http://127.0.0.1:11434/v1, llama-server, vLLM, LM Studio...). Refused requests never "
                       "reach it. Requests to it are bounded by --engine-timeout.")
    @click.option("--answer-model", default=None, metavar="NAME",
                  help="The model the answer engine answers with (Ollama and LM Studio need it) [default: the first "
                       "it lists].")
    @click.option("--answer-api-key", envvar=ANSWER_KEY_ENV, show_envvar=True, default=None, metavar="KEY",
                  help="Sent as 'Authorization: Bearer KEY' to the answer engine.")
    @click.option("--refusal-writer", type=click.Choice(REFUSAL_WRITERS), default=REFUSAL_WRITERS[0],
                  show_default=True, help="Who writes a refusal: the decision model, or the answer engine from an "
                                          "instruction naming the category (the request itself is not sent).")
    @click.option("--speculative-answer", is_flag=True,
                  help="Ask the answer engine while the decision is made, cancelling on a refusal: a faster first "
                       "token, but refused requests then reach the engine (its logs). See docs/guard.md.")
    @functools.wraps(func)
    def wrapper(*args, answer_url=None, answer_model=None, answer_api_key=None, refusal_writer=REFUSAL_WRITERS[0],
                speculative_answer=False, **kwargs):
        if answer_url is None:
            if answer_model or speculative_answer or refusal_writer != REFUSAL_WRITERS[0]:
                raise click.UsageError("--answer-model, --refusal-writer and --speculative-answer need "
                                       "--answer-engine URL")
            kwargs["answer"] = None
            return func(*args, **kwargs)
        timeout = kwargs.get("engine_timeout")
        if kwargs.get("engine_url") is None:
            kwargs["engine_timeout"] = None  # the answer engine's alone: no remote decision model to bound
        kwargs["answer"] = AnswerTarget(answer_url, answer_model, answer_api_key,
                                        **({} if timeout is None else {"timeout": timeout}),
                                        refusal_writer=refusal_writer, speculative=speculative_answer)
        return func(*args, **kwargs)

    return wrapper
