"""Batched first-token scoring on llama.cpp: many prompts per ``llama_decode``, one sequence id per prompt.

Evaluation scores thousands of short prompts that share the chat template's header (and often a system prompt).
One prompt per decode leaves the CPU's matrix kernels working on a few dozen rows at a time and pays Python and
launch overhead per prompt. Here consecutive prompts form a *group*: the group's common prefix is evaluated once on
sequence 0 (kept across groups, so a system prompt shared by the whole run is evaluated once), attached to every
member's sequence with ``llama_memory_seq_cp`` (a unified KV cache shares the cells, nothing is copied or
recomputed), and then all members' remaining tokens go into one batch with logits requested only at each member's
last position.

This runs on its own llama.cpp context (``n_seq_max`` > 1, unified KV cache) so that the engine's single-sequence
context, which generation and prefix reuse across turns rely on, is left exactly as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from ...decision import FirstTokenScores
from ...engine import PrefillStats, Scored, common_prefix
from ...errors import ModelLoadError, RefusalEdgeError
from ...metadata import RefusalSpec
from .lib import llama_cpp_module

PREFIX_SEQ = 0  # holds the current group's shared prefix; members use sequences 1..n


@dataclass
class Group:
    """Prompts scored by one batch: their indices and the prefix they all share (at least one token of each is
    left over, since logits come only from evaluated positions)."""

    members: list[int]
    prefix: int


def plan_groups(prompts: Sequence[Sequence[int]], indices: Sequence[int], budget: int, n_ctx: int,
                max_members: int) -> list[Group]:
    """Consecutive prompts grouped so that every group's leftover tokens fit ``budget`` (at most one decode), its
    cells fit ``n_ctx`` and it has at most ``max_members`` members. Once a group has two members its prefix is fixed: a prompt
    sharing less closes the group rather than make every member recompute the difference."""
    groups: list[Group] = []
    for i in indices:
        tokens = prompts[i]
        if groups:
            g = groups[-1]
            first = prompts[g.members[0]]
            shared = min(common_prefix(first, tokens), len(tokens) - 1, g.prefix)
            if len(g.members) == 1 or shared == g.prefix:
                rest = sum(len(prompts[m]) for m in g.members) + len(tokens) - shared * (len(g.members) + 1)
                if len(g.members) < max_members and rest <= budget and shared + rest <= n_ctx:
                    g.members.append(i)
                    g.prefix = shared
                    continue
        groups.append(Group([i], len(tokens) - 1))
    return groups


# Tokens per group. In one KV window every token also attends to (then masks out) the other members' cells, an
# overhead growing with the group while the gain of wider matrix products levels off; on a 2-core AVX-512 machine
# with SmolLM2-135M Q8_0, 128 was fastest of 128/256/512 (benchmarks/eval_throughput.py, README).
GROUP_TOKENS = 128


class BatchScorer:
    """A second llama.cpp context on the same weights, with ``max_members + 1`` sequences in one unified KV cache."""

    def __init__(self, llm, n_ctx: int, n_batch: int, max_members: int, n_vocab: int,
                 group_tokens: int = GROUP_TOKENS) -> None:
        self._lc = lc = llama_cpp_module()
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        self.max_members = max(1, min(max_members, lc.llama_max_parallel_sequences() - 1))
        params.n_seq_max = self.max_members + 1
        params.kv_unified = True  # the prefix's cells are shared by all sequences, and n_ctx is not split per sequence
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        self.ctx = lc.llama_init_from_model(llm._model.model, params)
        if not self.ctx:
            raise ModelLoadError("llama.cpp could not create a context for batched scoring")
        self.mem = lc.llama_get_memory(self.ctx)
        self.n_ctx, self.n_batch, self.n_vocab = n_ctx, n_batch, n_vocab
        self.group_tokens = min(group_tokens, n_batch)
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        view = lambda field: np.ctypeslib.as_array(getattr(self._batch, field), shape=(n_batch,))  # noqa: E731
        self._token, self._pos, self._n_seq, self._want = view("token"), view("pos"), view("n_seq_id"), view("logits")
        self._n_seq[:] = 1
        self._seq_ptrs = [self._batch.seq_id[i] for i in range(n_batch)]
        self._prefix: list[int] = []  # what sequence 0 holds

    def close(self) -> None:
        if self.ctx:
            self._lc.llama_batch_free(self._batch)
            self._lc.llama_free(self.ctx)
            self.ctx = None

    def score_many(self, prompts: Sequence[Sequence[int]], spec: RefusalSpec, temperature: float,
                   check: Callable[[Sequence[int]], None]) -> Iterator[Union[Scored, RefusalEdgeError]]:
        """Results in order; ``check`` raises the error a prompt that cannot be scored yields in its place."""
        errors: dict[int, RefusalEdgeError] = {}
        for i, tokens in enumerate(prompts):
            try:
                check(tokens)
            except RefusalEdgeError as exc:
                errors[i] = exc
        ok = [i for i in range(len(prompts)) if i not in errors]
        done = 0
        for group in plan_groups(prompts, ok, self.group_tokens, self.n_ctx, self.max_members):
            results = self._run(prompts, group, spec, temperature)
            while done <= group.members[-1]:
                yield errors[done] if done in errors else results[done]
                done += 1
        while done < len(prompts):
            yield errors[done]
            done += 1

    def _run(self, prompts, group: Group, spec: RefusalSpec, temperature: float) -> dict[int, Scored]:
        t0 = time.perf_counter()
        prefix = list(prompts[group.members[0]][: group.prefix])
        reused = common_prefix(self._prefix, prefix)
        self._lc.llama_memory_seq_rm(self.mem, PREFIX_SEQ, reused, -1)
        self._prefix = prefix[:reused]
        self._decode([(t, reused + k, PREFIX_SEQ, False) for k, t in enumerate(prefix[reused:])])
        self._prefix = prefix
        entries = []
        for seq, i in enumerate(group.members, start=1):
            self._lc.llama_memory_seq_cp(self.mem, PREFIX_SEQ, seq, 0, group.prefix)
            tail = prompts[i][group.prefix:]
            entries += [(t, group.prefix + k, seq, k == len(tail) - 1) for k, t in enumerate(tail)]
        try:
            rows = self._decode(entries)
        finally:
            for seq in range(1, len(group.members) + 1):
                self._lc.llama_memory_seq_rm(self.mem, seq, -1, -1)
        ms = (time.perf_counter() - t0) * 1e3 / len(group.members)
        out = {}
        for k, i in enumerate(group.members):
            stats = PrefillStats(len(prompts[i]), reused if k == 0 else group.prefix, ms)
            out[i] = FirstTokenScores.from_logits(rows[k], spec, temperature), stats
        return out

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Evaluate (token, position, sequence, wants logits) entries in ``n_batch`` chunks; the logits rows asked
        for, in order (copies: the buffer is overwritten by the next decode)."""
        lc, rows = self._lc, []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            n = len(chunk)
            tokens, positions, seqs, wants = zip(*chunk)
            self._token[:n], self._pos[:n], self._want[:n] = tokens, positions, wants
            for k, seq in enumerate(seqs):
                self._seq_ptrs[k][0] = seq
            self._batch.n_tokens = n
            rc = lc.llama_decode(self.ctx, self._batch)
            if rc != 0:
                lc.llama_memory_clear(self.mem, True)
                self._prefix = []
                raise ModelLoadError(f"llama.cpp failed to evaluate a batch of prompts (llama_decode returned {rc})")
            for k in np.flatnonzero(self._want[:n]):
                ptr = lc.llama_get_logits_ith(self.ctx, int(k))
                rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return rows

