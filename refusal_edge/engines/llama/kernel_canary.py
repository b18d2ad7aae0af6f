"""The kernel canary's child process: ``python -m refusal_edge.engines.llama.kernel_canary DIR``.

Writes (once, into DIR) a tiny random-weight llama GGUF whose matrices are quantized the way real models are (Q8_0
and Q4_0, shapes that llama.cpp's AMX and repacked kernels accept), then decodes a two-token batch and one more token
with llama.cpp's extra CPU buffer types off and then on, and prints one JSON line: "ok", or "wrong" when the logits
differ. A crash in the second load or decode kills this process; the parent (``kernels.run_canary``) sees the signal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ...files import atomic_path

CANARY_FILE = "canary-v1.gguf"
N_EMBD, N_HEAD, N_FF, N_LAYER = 64, 2, 128, 2
TOKENS = (72, 105, 33)  # two in one batch, then one alone: the batch is what crashed, the single decode did not
# Repacked and plain kernels sum the same int8 products in another order: agreement far tighter than this; a wrong
# kernel is off by the size of the logits themselves.
TOLERANCE = 1e-2


def write_canary_model(path: Path) -> Path:
    import gguf

    byte_chars = _byte_chars()
    pairs = [(a, b) for a in "etaoin" for b in "shrdlu"][:32]  # 32 merges: 288 tokens, a multiple of 32 (the
    # output matmul's width must be one for the AMX kernels to take it)
    tokens = byte_chars + [a + b for a, b in pairs]
    rng = np.random.default_rng(20824)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name("refusal-edge kernel canary")
        for add, value in ((w.add_context_length, 64), (w.add_embedding_length, N_EMBD), (w.add_block_count, N_LAYER),
                           (w.add_feed_forward_length, N_FF), (w.add_head_count, N_HEAD),
                           (w.add_head_count_kv, N_HEAD), (w.add_rope_dimension_count, N_EMBD // N_HEAD),
                           (w.add_rope_freq_base, 10000.0), (w.add_layer_norm_rms_eps, 1e-5),
                           (w.add_vocab_size, len(tokens))):
            add(value)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
        w.add_token_merges([f"{a} {b}" for a, b in pairs])
        w.add_bos_token_id(0)
        w.add_eos_token_id(1)

        def matrix(name: str, rows: int, cols: int, qtype) -> None:
            data = (rng.standard_normal((rows, cols)) * 0.3).astype(np.float32)
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

        Q = gguf.GGMLQuantizationType
        matrix("token_embd.weight", len(tokens), N_EMBD, Q.Q8_0)
        for i in range(N_LAYER):
            qtype = (Q.Q8_0, Q.Q4_0)[i % 2]  # the two most common quantized types, one layer each
            w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32))
            w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
            for name, rows, cols in (("attn_q", N_EMBD, N_EMBD), ("attn_k", N_EMBD, N_EMBD), ("attn_v", N_EMBD, N_EMBD),
                                     ("attn_output", N_EMBD, N_EMBD), ("ffn_gate", N_FF, N_EMBD),
                                     ("ffn_up", N_FF, N_EMBD), ("ffn_down", N_EMBD, N_FF)):
                matrix(f"blk.{i}.{name}.weight", rows, cols, qtype)
        w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
        matrix("output.weight", len(tokens), N_EMBD, Q.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes: a complete byte-level vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    table = dict(zip(keep, chars))
    return [chr(table[b]) for b in range(256)]


def decode_logits(path: Path, repack: str) -> np.ndarray:
    from .engine import LlamaEngine

    engine = LlamaEngine(path, n_ctx=64, n_threads=1, n_batch=64, batch_sequences=1, repack=repack)
    try:
        engine.prefill(list(TOKENS[:2]), outputs=2)
        rows = [engine.logits(-2).copy(), engine.logits(-1).copy()]
        engine.feed(TOKENS[2])
        rows.append(engine.logits(-1).copy())
        return np.stack(rows)
    finally:
        engine.close()


def check(directory: Path) -> dict:
    path = directory / CANARY_FILE
    if not path.is_file():
        write_canary_model(path)
    plain = decode_logits(path, "off")
    print(json.dumps({"plain": "ok"}), flush=True)  # what the parent looks for when this process dies next
    extra = decode_logits(path, "on")  # where the kernels crash, this process dies here
    if not (np.isfinite(plain).all() and np.isfinite(extra).all()):
        return {"outcome": "wrong", "detail": "gave logits that are not finite"}
    diff = float(np.max(np.abs(plain - extra)))
    scale = float(np.max(np.abs(plain)))
    if diff > TOLERANCE * max(1.0, scale):
        return {"outcome": "wrong", "detail": f"gave other logits (max difference {diff:.3g} at scale {scale:.3g})"}
    return {"outcome": "ok", "detail": f"matched without them (max difference {diff:.2g})"}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m refusal_edge.engines.llama.kernel_canary CACHE_DIR", file=sys.stderr)
        return 2
    print(json.dumps(check(Path(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
