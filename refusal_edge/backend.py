"""The in-process llama.cpp engine: the one place that talks to llama.cpp (the seam it implements is engine.py)."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from .decision import FirstTokenScores
from .engine import Engine, PrefillStats, Tokenizer
from .errors import ModelLoadError, PromptTooLongError
from .metadata import RefusalSpec
from .sampling import SamplingParams
from .text import clean

GGUF_MAGIC = b"GGUF"


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - the package is a core dependency
        raise ModelLoadError(f"llama-cpp-python is not importable: {exc}") from None
    return llama_cpp


_silent_log = None


def set_verbose(verbose: bool) -> None:
    """llama.cpp logs load details to stderr; users see them only when they ask.

    llama-cpp-python's own callback maps ggml's newer log levels one step off and so prints warnings even when
    quiet; when not verbose, a callback that drops everything is installed instead (errors surface as exceptions).
    """
    global _silent_log
    lc = _llama_cpp()
    from llama_cpp import _logger

    _logger.set_verbose(verbose)
    if verbose:
        lc.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        return
    if _silent_log is None:
        _silent_log = lc.llama_log_callback(lambda level, text, user_data: None)
    lc.llama_log_set(_silent_log, ctypes.c_void_p(0))


class Sampler:
    """A native llama.cpp sampler chain, the same one ``create_completion`` builds."""

    def __init__(self, backend: "LlamaBackend", params: SamplingParams) -> None:
        self._chain = None
        lc = _llama_cpp()
        self._lc = lc
        self._ctx = backend.ctx
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda s: lc.llama_sampler_chain_add(chain, s)  # noqa: E731
        if params.repeat_penalty != 1.0:
            add(lc.llama_sampler_init_penalties(backend.n_vocab, params.repeat_last_n, params.repeat_penalty, 0.0, 0.0))
        if params.temperature == 0:
            add(lc.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(lc.llama_sampler_init_top_k(params.top_k))
            add(lc.llama_sampler_init_top_p(params.top_p, 1))
            add(lc.llama_sampler_init_min_p(params.min_p, 1))
            add(lc.llama_sampler_init_temp(params.temperature))
            seed = lc.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
            add(lc.llama_sampler_init_dist(seed))
        self._chain = chain

    def sample(self) -> int:
        """Sample from the last evaluated position's logits (and record the token for repeat penalties)."""
        return int(self._lc.llama_sampler_sample(self._chain, self._ctx, -1))

    def accept(self, token: int) -> None:
        self._lc.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            self._lc.llama_sampler_free(self._chain)
            self._chain = None

    __del__ = close


class LlamaTokenizer(Tokenizer):
    """The vocabulary of a loaded ``Llama`` (which may be a vocabulary-only load, see ``load_tokenizer``)."""

    def __init__(self, llm, path: Path) -> None:
        lc = _llama_cpp()
        self._lc, self._llm = lc, llm
        self.path = path
        self.name = path.stem
        self._vocab = lc.llama_model_get_vocab(llm._model.model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self.metadata: dict[str, str] = dict(llm.metadata)
        self._piece_buf = ctypes.create_string_buffer(256)

    def token_text(self, token: int) -> str:
        return self._lc.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    def is_control(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_get_attr(self._vocab, token) & self._lc.LLAMA_TOKEN_ATTR_CONTROL)

    def is_eog(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_is_eog(self._vocab, token))

    @property
    def bos(self) -> int:
        return int(self._lc.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        return int(self._lc.llama_vocab_eos(self._vocab))

    @property
    def add_bos(self) -> bool:
        return bool(self._lc.llama_vocab_get_add_bos(self._vocab))

    def tokenize(self, text: str, special: bool) -> list[int]:
        if not text:
            return []
        # Every text reaches the model through here: a lone surrogate becomes U+FFFD instead of an encode error.
        return self._llm.tokenize(clean(text).encode("utf-8"), add_bos=False, special=special)

    def piece(self, token: int) -> bytes:
        """Bytes a token contributes to output text; CONTROL tokens contribute none."""
        buf = self._piece_buf
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()


def _load_llama(path: Path, verbose: bool, **kwargs):
    check_gguf_file(path)
    _llama_cpp()
    from llama_cpp import Llama

    set_verbose(verbose)
    try:
        return Llama(model_path=str(path), verbose=verbose, **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {path}: {exc} (is the file complete, and an architecture this "
            "llama.cpp build supports?)"
        ) from None


def load_tokenizer(path: str | os.PathLike, verbose: bool = False) -> LlamaTokenizer:
    """A GGUF's vocabulary without its weights: for engines that run the model elsewhere."""
    path = Path(path)
    return LlamaTokenizer(_load_llama(path, verbose, vocab_only=True), path)


class LlamaBackend(LlamaTokenizer, Engine):
    """A loaded GGUF with one context and one sequence whose KV cache is reused by prefix.

    It is its own tokenizer. ``prefill``/``feed``/``logits``/``reset``/``sampler`` are llama.cpp specifics, for
    this module and for tests and benchmarks of this engine; code above the seam uses ``Engine`` only.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        verbose: bool = False,
        **llama_kwargs,
    ) -> None:
        path = Path(path)
        threads = n_threads or max(1, os.cpu_count() or 1)
        llm = _load_llama(
            path, verbose, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
            n_batch=min(n_batch, n_ctx) if n_ctx else n_batch, logits_all=False, **llama_kwargs,
        )
        super().__init__(llm, path)
        self.tokenizer = self
        self.ctx = self._llm._ctx.ctx
        self.n_ctx = int(self._llm.n_ctx())

    # the engine seam --------------------------------------------------------------------------
    def score(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float = 1.0):
        t0 = time.perf_counter()
        reused = self.prefill(list(tokens))
        stats = PrefillStats(len(tokens), reused, (time.perf_counter() - t0) * 1e3)
        return FirstTokenScores.from_logits(self.logits(), spec, temperature), stats

    def generate(self, tokens: Sequence[int], params: SamplingParams,
                 first_token_bias: Mapping[int, float] | None = None) -> Iterator[int]:
        tokens = list(tokens)
        if first_token_bias is None and (params.max_tokens <= 0 or len(tokens) >= self.n_ctx):
            return  # no room for the forced token (or no budget after it): a "length" finish, as before
        sampler = Sampler(self, params)
        try:
            if first_token_bias is None:
                self.prefill(tokens)  # the prompt is cached (it was just scored): only the forced token is fed
                token = sampler.sample()
            else:
                if not self._holds_logits_of(tokens):
                    self.prefill(tokens)
                token = self._sample_biased(sampler, first_token_bias)
            sampled_after_first = 0 if first_token_bias is None else -1
            while True:
                sampled_after_first += 1
                yield token
                if self.is_eog(token) or sampled_after_first >= params.max_tokens or self.context_left <= 1:
                    return
                self.feed(token)
                token = sampler.sample()
        finally:
            sampler.close()

    def _holds_logits_of(self, tokens: list[int]) -> bool:
        """Whether the context holds exactly ``tokens``, so the logits buffer is their last position's."""
        n = self._llm.n_tokens
        return n == len(tokens) and bool(np.array_equal(self._llm.input_ids[:n], tokens))

    def _sample_biased(self, sampler: "Sampler", bias: Mapping[int, float]) -> int:
        """Sample with logit biases added in llama.cpp's buffer, then restore it exactly."""
        if not bias:
            return sampler.sample()
        logits = self.logits()
        ids = np.fromiter(bias, dtype=np.int64, count=len(bias))
        saved = logits[ids].copy()
        logits[ids] += np.asarray(list(bias.values()), dtype=np.float32)
        try:
            return sampler.sample()
        finally:
            logits[ids] = saved

    # llama.cpp specifics ----------------------------------------------------------------------
    def prefill(self, tokens: list[int]) -> int:
        """Evaluate ``tokens`` reusing the longest cached prefix; returns how many were reused.

        The last token is always evaluated again so that its logits are fresh.
        """
        if not tokens:
            raise ValueError("cannot prefill an empty prompt")
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(
                f"the prompt is {len(tokens)} tokens, the context holds {self.n_ctx}: shorten it or raise n_ctx"
            )
        cached = self._llm.input_ids[: self._llm.n_tokens]
        limit = min(len(cached), len(tokens) - 1)
        head = np.asarray(tokens[:limit], dtype=cached.dtype)
        diverge = np.flatnonzero(cached[:limit] != head)
        reuse = int(diverge[0]) if diverge.size else limit
        self._llm.n_tokens = reuse
        self._eval(tokens[reuse:])
        return reuse

    def feed(self, token: int) -> None:
        if self._llm.n_tokens >= self.n_ctx:
            raise PromptTooLongError(f"the context of {self.n_ctx} tokens is full")
        self._eval([token])

    @property
    def context_left(self) -> int:
        return self.n_ctx - self._llm.n_tokens

    def _eval(self, tokens: list[int]) -> None:
        try:
            self._llm.eval(tokens)
        except RuntimeError as exc:
            self.reset()
            raise ModelLoadError(f"llama.cpp failed to evaluate the prompt: {exc}") from None

    def logits(self) -> np.ndarray:
        """A zero-copy, writable view of the last position's logits (valid until the next eval)."""
        ptr = self._lc.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def reset(self) -> None:
        self._llm.reset()
        self._llm._ctx.kv_cache_seq_rm(-1, 0, -1)

    def sampler(self, params: SamplingParams) -> Sampler:
        return Sampler(self, params)


def check_gguf_file(path: Path) -> None:
    """Fail early and plainly on what llama.cpp would report obscurely (or crash on)."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})")
