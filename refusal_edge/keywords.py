"""The keyword arguments of the Python API, typed: ``load(path, **LoadOptions)``, ``stream``/``generate``'s sampling
keywords (``SamplingOptions``, the fields of SamplingParams). Type checkers and editors read them through
``Unpack``; at run time nothing here is evaluated (the annotations are strings), so Python 3.10 needs no
typing_extensions. tests/test_cli_vocabulary.py keeps them equal to the signatures they describe."""

from __future__ import annotations

from typing import Sequence, TypedDict


class LoadOptions(TypedDict, total=False):
    """``RefusalModel.load``'s options: the in-process llama.cpp engine's (engines/llama/engine.py)."""

    n_ctx: int  # tokens a sequence may hold [4096]
    n_threads: int | None  # CPU threads [all cores]
    n_gpu_layers: int  # layers offloaded to Metal/CUDA builds (-1: all) [0]
    n_batch: int  # prompt tokens per llama.cpp batch [512]
    batch_sequences: int  # prompts scored together by score_many [16]
    score_block: int  # tokens per fixed decode block of score_many (batch-independent scores) [32]; 0: batched
    predict_decision: bool | None  # evaluate the expected decision token with the prompt [None: where it pays]
    verbose: bool  # llama.cpp's own log [False]
    repack: str | None  # "on", "off" or "auto" [$REFUSAL_EDGE_REPACK, else auto]


class SamplingOptions(TypedDict, total=False):
    """How the answer is decoded: SamplingParams' fields, as keywords (sampling.py has their ranges)."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    repeat_last_n: int
    seed: int | None
    max_tokens: int
    stop: str | Sequence[str]


class StreamOptions(SamplingOptions, total=False):
    """``stream``'s and ``generate``'s keywords: a SamplingParams or its fields, and how to wait for the model."""

    sampling: object  # a SamplingParams (typed as object: this module stays free of imports)
    blocking: bool
    timeout: float | None
