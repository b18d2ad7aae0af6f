"""The ceilings benchmarks/eval_throughput.py compares scoring against: the FLOPs a scoring pass needs, torch's
float32 matrix-multiply rate on this machine, and the best rate llama.cpp's own kernels reach on the model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def prefill_flops(path: Path, run, n_prompts: int) -> float:
    """FLOPs to score the prompts: 2 per weight per evaluated token in every block matrix, attention over the
    cached positions, and the output matrix at each prompt's last position only."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = lambda key: int(reader.fields[key].parts[-1][0])  # noqa: E731
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    block = block_weights(path, reader)
    out = next((t for t in reader.tensors if t.name == "output.weight"), None) or \
        next(t for t in reader.tensors if t.name == "token_embd.weight")
    evaluated = run.prefill_tokens - run.reused_tokens
    mean_len = run.prefill_tokens / max(n_prompts, 1)
    attention = 4 * field(f"{arch}.block_count") * field(f"{arch}.embedding_length") * mean_len / 2
    return evaluated * (2 * block + attention) + n_prompts * 2 * int(np.prod(out.shape))


def block_weights(path: Path, reader=None) -> int:
    """Weights in the transformer blocks' matrices: 2 FLOPs each per evaluated token."""
    import gguf

    reader = reader or gguf.GGUFReader(str(path))
    return sum(int(np.prod(t.shape)) for t in reader.tensors if t.name.startswith("blk.") and len(t.shape) == 2)


def sgemm_rate(threads: int, torch) -> float:
    """float32 GFLOP/s of torch's matrix multiply at a prefill-like shape (256 tokens x 576 -> 1536)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(256, 576), torch.randn(576, 1536)
    for _ in range(5):
        a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 1.0:
        a @ b
        n += 1
    return 2 * 256 * 576 * 1536 * n / (time.perf_counter() - t) / 1e9


def best_rate(path: Path, threads: int) -> float:
    """GFLOP/s of llama.cpp's block matrices in one 512-token decode from an empty cache (best of 3): the rate its
    kernels reach on this CPU when nothing but the weights' type limits them."""
    from refusal_edge.engines.llama.vocab import load_llama

    llm = load_llama(path, n_ctx=1024, n_batch=512, n_threads=threads, n_threads_batch=threads, logits_all=False)
    tokens = [(k * 7919) % llm.n_vocab() for k in range(512)]  # any ids: the cost does not depend on them
    seconds = []
    for _ in range(3):
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        t = time.perf_counter()
        llm.eval(tokens)
        seconds.append(time.perf_counter() - t)
    llm.close()
    return 2 * block_weights(path) * len(tokens) / min(seconds) / 1e9
