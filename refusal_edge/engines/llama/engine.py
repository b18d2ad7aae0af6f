"""The in-process llama.cpp engine (the seam it implements is refusal_edge/engine.py): ``LlamaEngine`` runs the
model; its vocabulary is a member, ``tokenizer`` (a ``LlamaTokenizer``, vocab.py), as a remote engine's is."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from ... import settings
from ...decision import FirstTokenScores
from ...engine import Engine, PrefillStats, Scored, common_prefix
from ...errors import ModelLoadError, PromptTooLongError, RefusalEdgeError
from ...metadata import RefusalSpec
from ...sampling import SamplingParams
from .lib import llama_cpp_module
from .sampler import Sampler
from .vocab import LlamaTokenizer, load_llama


# Decode boundaries when scoring for evaluation (``score_aligned``): every SCORE_BLOCK // 4 tokens below SCORE_BLOCK (a
# chat template's header is reused up to its last fine boundary), then every SCORE_BLOCK tokens (a long system prompt is
# reused in whole blocks, and a prompt's own tokens go in few decodes). Measured in docs/evaluation.md.
SCORE_BLOCK = 32


def aligned_boundary(position: int, block: int) -> int:
    """The last decode boundary at or before ``position``."""
    fine = block // 4 if block >= 4 and block % 4 == 0 else block
    return position - position % (fine if position < block else block)


def aligned_chunks(start: int, end: int, block: int) -> list[tuple[int, int]]:
    """The decodes that evaluate positions ``start``..``end`` - 1, ``start`` a boundary: one per boundary crossed."""
    chunks = []
    while start < end:
        stop = min(end, aligned_boundary(start, block) + (block // 4 if start < block and block % 4 == 0 else block))
        chunks.append((start, stop))
        start = stop
    return chunks


def aligned_reuse(cached: Sequence[int], tokens: Sequence[int], block: int) -> int:
    """How many cached tokens an aligned prefill keeps: up to the last boundary within the prefix shared with
    ``tokens``, and at least the last token left to evaluate (its logits are the scores)."""
    return aligned_boundary(min(common_prefix(cached, tokens), len(tokens) - 1), block)


class LlamaEngine(Engine):
    """A loaded GGUF with one context and one sequence whose KV cache is reused by prefix.

    ``score_many`` prefills each prompt on its own in blocks of ``score_block`` tokens at fixed positions, so that a
    prompt's scores are the same bytes whatever it is scored with (``score_aligned``). With ``score_block=0`` it
    scores up to ``batch_sequences`` prompts per decode on a second context created on first use (``batch.py``),
    faster but batch-dependent in the last digits; ``batch_sequences=1`` then scores them one at a time, reusing
    whatever prefix the previous prompt left.
    ``repack`` chooses llama.cpp's extra CPU buffer types ("auto", "on", "off"; see ``kernels``).
    ``score_ahead`` evaluates the predicted decision token with the prompt where that pays: ``predict_decision``
    None (the default) decides by timing it once on this model, build, CPU and thread count (``prediction.py``),
    True/False force it. The first response token is always evaluated in one decode with the token before it (in
    the prompt's batch on a hit, as a pair otherwise), as ``create_completion`` evaluates a prompt that ends with it:
    llama.cpp rounds a token decoded alone differently from one inside a batch, and a greedy answer would branch at
    a near tie. So answers are the same with or without prediction, hit or miss, and the same as llama-cpp-python's.
    Its vocabulary is ``tokenizer``, a ``LlamaTokenizer`` on the same loaded model. ``prefill``/``feed``/``logits``/
    ``reset``/``sampler`` are llama.cpp specifics, for this module and for tests and benchmarks of this engine; code
    above the seam uses ``Engine`` only.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_ctx: int = settings.N_CTX,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        batch_sequences: int = 16,
        score_block: int = SCORE_BLOCK,
        predict_decision: bool | None = None,
        verbose: bool = False,
        repack: str | None = None,
        **llama_kwargs,
    ) -> None:
        path = Path(path)
        threads = n_threads or max(1, os.cpu_count() or 1)
        llm = load_llama(
            path, verbose, repack, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
            n_batch=min(n_batch, n_ctx) if n_ctx else n_batch, logits_all=False, **llama_kwargs,
        )
        self._lc, self._llm = llama_cpp_module(), llm
        self.path = path  # the GGUF: evaluation names its results by it
        self.tokenizer = LlamaTokenizer(llm, path)  # closing it frees the model (``close``)
        self.ctx = llm._ctx.ctx
        # llama.cpp may round a small context up (64 -> 256) while llama-cpp-python sizes its token buffer by the
        # request: the smaller of the two is what a sequence can really hold.
        self.n_ctx = min(int(self._llm.n_ctx()), len(self._llm.input_ids))
        self.batch_sequences = batch_sequences
        self.score_block = max(0, min(score_block, self._llm.n_batch))
        self.predict_decision = predict_decision  # None: measured (``prediction_choice``); True/False: forced
        self.load_facts = {"threads": threads, "n_gpu_layers": n_gpu_layers, "repack": repack}  # what timings depend on
        self._prediction = None  # the measured PredictionChoice, once made
        self._batch_scorer = None
        self._predicted = False  # whether the context holds one predicted token past the scored prompt

    # the engine seam --------------------------------------------------------------------------
    def score_fitting(self, tokens: list[int], spec: RefusalSpec, temperature: float) -> Scored:
        t0 = time.perf_counter()
        reused = self.prefill(tokens)
        stats = PrefillStats(len(tokens), reused, (time.perf_counter() - t0) * 1e3)
        return FirstTokenScores.from_logits(self.logits(), spec, temperature), stats

    def score_ahead(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float = 1.0,
                    predicted: int | None = None):
        """The prompt and the predicted token in one decode, with logits at both: the prompt's row is scored, and
        the predicted token's row is what ``generate`` samples the first answer token from when the prediction
        holds. On a miss ``generate`` drops the predicted token's cell and feeds the chosen one, as without it."""
        tokens = list(tokens)
        if predicted is None or len(tokens) + 1 >= self.n_ctx or not self.predicts(predicted):
            return self.score(tokens, spec, temperature)
        t0 = time.perf_counter()
        reused = self.prefill([*tokens, predicted], outputs=2)
        stats = PrefillStats(len(tokens), min(reused, len(tokens)), (time.perf_counter() - t0) * 1e3)
        self._predicted = True
        return FirstTokenScores.from_logits(self.logits(-2), spec, temperature), stats

    def predicts(self, predicted: int) -> bool:
        """Whether ``score_ahead`` evaluates ``predicted`` with the prompt: forced, or measured on first use."""
        return self.prediction_choice(predicted).on

    def prediction_choice(self, predicted: int):
        """Whether decision-token prediction is on for this engine and why (a ``prediction.PredictionChoice``); unless
        forced, timed with ``predicted`` as the expected token, once per model, build, CPU and thread count."""
        from .prediction import choose, forced

        if self.predict_decision is not None:
            return forced(bool(self.predict_decision))
        if self._prediction is None:
            self._prediction = choose(self, predicted)
        return self._prediction

    def score_many(self, batch: Sequence[Sequence[int]], spec: RefusalSpec,
                   temperature: float = 1.0) -> Iterator[Union[Scored, RefusalEdgeError]]:
        if self.score_block:
            for tokens in batch:
                try:
                    self._check_fits(tokens)
                except RefusalEdgeError as exc:
                    yield exc
                    continue
                yield self.score_aligned(list(tokens), spec, temperature)
            return
        if self.batch_sequences <= 1 or len(batch) < 2:
            yield from super().score_many(batch, spec, temperature)
            return
        if self._batch_scorer is None:
            from .batch import BatchScorer

            self._batch_scorer = BatchScorer(self._llm, self.n_ctx, self._llm.n_batch, self.batch_sequences,
                                             self.tokenizer.n_vocab)
        yield from self._batch_scorer.score_many(batch, spec, temperature, self._check_fits)

    def score_aligned(self, tokens: list[int], spec: RefusalSpec, temperature: float = 1.0) -> Scored:
        """Scores that depend on ``tokens`` alone. llama.cpp's CPU kernels round a row differently with the shape of
        the decode it is in, so reusing whatever prefix the previous prompt left (or batching prompts) changes the
        last bits of a logit with the neighbours. Here every decode runs from one fixed boundary to the next
        (``aligned_chunks``), on a cache holding only this prompt's earlier blocks, which were computed
        the same way: the same bytes whether the prompt is scored alone, in any batch, process or Ray worker. Blocks
        shared with the previous prompt are still reused."""
        t0 = time.perf_counter()
        keep = aligned_reuse(self._llm.input_ids[: self._llm.n_tokens], tokens, self.score_block)
        self._llm.n_tokens = keep
        for start, stop in aligned_chunks(keep, len(tokens), self.score_block):
            self._eval(tokens[start:stop])
        stats = PrefillStats(len(tokens), keep, (time.perf_counter() - t0) * 1e3)
        return FirstTokenScores.from_logits(self.logits(), spec, temperature), stats

    def continue_from(self, tokens: list[int], params: SamplingParams,
                      first_token_bias: Mapping[int, float] | None) -> Iterator[int]:
        sampler = Sampler(self.ctx, self.tokenizer.n_vocab, params)
        try:
            if first_token_bias is None:
                self.advance(tokens)  # the forced token: already evaluated on a prediction hit
                token = sampler.sample()
                sampled = 1
            else:  # the first response token is sampled here, from the prompt's row, then evaluated like a forced one
                ahead = self._predicted and self._holds_logits_of(tokens, ahead=1)
                if not ahead and not self._holds_logits_of(tokens):
                    self.prefill(tokens)
                token = self._sample_biased(sampler, first_token_bias, row=-2 if ahead else -1)
                sampled = 0
            while True:
                yield token
                if self.tokenizer.is_eog(token) or sampled >= params.max_tokens or self.context_left <= 1:
                    return
                if sampled:
                    self.feed(token)  # answer tokens are decoded one at a time, as create_completion does
                else:
                    self.advance([*tokens, token])  # the first response token, with the one before it
                token = sampler.sample()
                sampled += 1
        finally:
            sampler.close()

    def advance(self, tokens: list[int]) -> None:
        """Make ``tokens`` (a scored prompt and its first response token) the context, the logits at their end,
        evaluating that token together with the one before it: in one decode, as ``create_completion`` would in the
        prompt's batch (a token decoded alone is rounded differently). Nothing is evaluated on a prediction hit; on a
        miss the predicted token's cell is dropped."""
        if not self._holds_logits_of(tokens):
            self.prefill(tokens, outputs=1, fresh=2)

    def _holds_logits_of(self, tokens: list[int], ahead: int = 0) -> bool:
        """Whether the context holds exactly ``tokens`` (plus ``ahead`` predicted ones), so the logits buffer's
        last row is the last position's (and, with a prediction, the row before it is the prompt's)."""
        n = self._llm.n_tokens
        return n == len(tokens) + ahead and bool(np.array_equal(self._llm.input_ids[:len(tokens)], tokens))

    def _sample_biased(self, sampler: "Sampler", bias: Mapping[int, float], row: int = -1) -> int:
        """Sample from a logits row with biases added in llama.cpp's buffer, then restore it exactly."""
        if not bias:
            return sampler.sample(row)
        logits = self.logits(row)
        ids = np.fromiter(bias, dtype=np.int64, count=len(bias))
        saved = logits[ids].copy()
        logits[ids] += np.asarray(list(bias.values()), dtype=np.float32)
        try:
            return sampler.sample(row)
        finally:
            logits[ids] = saved

    # llama.cpp specifics ----------------------------------------------------------------------
    def _check_fits(self, tokens: Sequence[int]) -> None:
        if not tokens:
            raise ValueError("cannot prefill an empty prompt")
        self.check_fits(tokens)

    def prefill(self, tokens: list[int], outputs: int = 1, fresh: int = 1) -> int:
        """Evaluate ``tokens`` reusing the longest cached prefix; returns how many were reused.

        The last ``max(outputs, fresh)`` tokens are always evaluated again, in one decode, so that the logits of the
        last ``outputs`` are fresh (rows -outputs..-1).
        """
        self._check_fits(tokens)
        cached = self._llm.input_ids[: self._llm.n_tokens]
        limit = max(0, min(len(cached), len(tokens) - max(outputs, fresh)))
        reuse = common_prefix(cached[:limit], tokens[:limit])
        self._llm.n_tokens = reuse
        self._eval(tokens[reuse:], outputs)
        return reuse

    def feed(self, token: int) -> None:
        if self._llm.n_tokens >= self.n_ctx:
            raise PromptTooLongError(f"the context of {self.n_ctx} tokens is full")
        self._eval([token])

    @property
    def context_left(self) -> int:
        return self.n_ctx - self._llm.n_tokens

    def _eval(self, tokens: list[int], outputs: int = 1) -> None:
        """``Llama.eval``, with logits at the last ``outputs`` positions (one decode holds them all)."""
        self._predicted = False
        llm = self._llm
        try:
            if outputs == 1:
                llm.eval(tokens)
                return
            head = max(0, len(tokens) - llm.n_batch)
            if head:
                llm.eval(tokens[:head])
            tail, n_past = tokens[head:], llm.n_tokens
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llm._batch.set_batch(batch=tail, n_past=n_past, logits_all=False)
            for k in range(2, outputs + 1):
                llm._batch.batch.logits[len(tail) - k] = True
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past:n_past + len(tail)] = tail
            llm.n_tokens += len(tail)
        except RuntimeError as exc:
            self.reset()
            raise ModelLoadError(f"llama.cpp failed to evaluate the prompt: {exc}") from None

    def logits(self, row: int = -1) -> np.ndarray:
        """A zero-copy, writable view of a logits row of the last decode, by default the last position's (valid
        until the next eval)."""
        ptr = self._lc.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(ptr, shape=(self.tokenizer.n_vocab,))

    def reset(self) -> None:
        self._predicted = False
        self._llm.reset()
        self._llm._ctx.kv_cache_seq_rm(-1, 0, -1)

    def sampler(self, params: SamplingParams) -> Sampler:
        return Sampler(self.ctx, self.tokenizer.n_vocab, params)

    def close(self) -> None:
        scorer, self._batch_scorer = getattr(self, "_batch_scorer", None), None
        if scorer is not None:
            scorer.close()
        tokenizer, self._llm = getattr(self, "tokenizer", None), None
        if tokenizer is not None:
            tokenizer.close()  # it holds the loaded model: the weights go with it
