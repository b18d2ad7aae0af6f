"""llama.cpp's native sampler chain for the in-process engine (``LlamaEngine.sampler``), the same one
llama-cpp-python's ``create_completion`` builds, so that greedy and seeded answers match it token for token."""

from __future__ import annotations

from ...sampling import SamplingParams
from .lib import llama_cpp_module


class Sampler:
    """A native llama.cpp sampler chain, the same one ``create_completion`` builds."""

    def __init__(self, ctx, n_vocab: int, params: SamplingParams) -> None:
        """``ctx``: the llama.cpp context whose logits it samples; ``n_vocab``: its vocabulary's size."""
        self._chain = None
        lc = llama_cpp_module()
        self._lc = lc
        self._ctx = ctx
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda s: lc.llama_sampler_chain_add(chain, s)  # noqa: E731
        if params.repeat_penalty != 1.0:
            add(lc.llama_sampler_init_penalties(n_vocab, params.repeat_last_n,
                                                params.repeat_penalty, 0.0, 0.0))
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

    def sample(self, row: int = -1) -> int:
        """Sample from a logits row of the last decode, by default the last position's (and record the token for
        repeat penalties)."""
        return int(self._lc.llama_sampler_sample(self._chain, self._ctx, row))

    def accept(self, token: int) -> None:
        self._lc.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            self._lc.llama_sampler_free(self._chain)
            self._chain = None

    __del__ = close
