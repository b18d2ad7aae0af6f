"""Peak memory of `refusal-edge convert` against the size of the checkpoint it converts.

Writes a synthetic llama checkpoint of about --size-gb (several safetensors shards, float32 or bfloat16, a
llama-sized embedding), converts it in a child process with /usr/bin/time-like accounting (getrusage of the child:
peak resident set size), and checks the goal: peak RSS <= 0.25 x checkpoint + 1 GB. With --quant, the llama.cpp
quantizer's own peak is measured too (it is a separate step on the written GGUF).

    python benchmarks/convert_memory.py                     # 2 GB float32 checkpoint, 4 shards
    python benchmarks/convert_memory.py --size-gb 8 --dtype bf16 --quant q4_k_m --json out/mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_hf import f32_to_bf16_bits, small_tokenizer  # noqa: E402

GB = 1 << 30


def plan_model(size_gb: float, dtype_bytes: int, n_embd: int, n_vocab: int) -> dict:
    """A llama config whose weights come to about ``size_gb``."""
    n_ff = int(n_embd * 8 / 3) // 64 * 64
    per_layer = 4 * n_embd * n_embd + 3 * n_embd * n_ff + 2 * n_embd
    fixed = 2 * n_vocab * n_embd + n_embd
    n_layer = max(1, round((size_gb * GB / dtype_bytes - fixed) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": n_embd,
        "intermediate_size": n_ff, "num_hidden_layers": n_layer, "num_attention_heads": n_embd // 128,
        "num_key_value_heads": max(1, n_embd // 512), "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "vocab_size": n_vocab, "tie_word_embeddings": False,
    }


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    e, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (e // cfg["num_attention_heads"])
    shapes = {"model.embed_tokens.weight": (v, e)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (e,), p + "self_attn.q_proj.weight": (e, e),
                       p + "self_attn.k_proj.weight": (kv, e), p + "self_attn.v_proj.weight": (kv, e),
                       p + "self_attn.o_proj.weight": (e, e), p + "post_attention_layernorm.weight": (e,),
                       p + "mlp.gate_proj.weight": (f, e), p + "mlp.up_proj.weight": (f, e),
                       p + "mlp.down_proj.weight": (e, f)})
    shapes["model.norm.weight"] = (e,)
    shapes["lm_head.weight"] = (v, e)
    return shapes


def write_shard(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str, block: np.ndarray) -> None:
    """Stream a safetensors shard: header first, then each tensor from a repeated random block (little memory)."""
    size = 4 if dtype == "F32" else 2
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    raw = block.astype("<f4").tobytes() if dtype == "F32" else f32_to_bf16_bits(block).tobytes()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for name, shape in shapes.items():
            left = int(np.prod(shape)) * size
            while left:
                chunk = raw[: min(len(raw), left)]
                fh.write(chunk)
                left -= len(chunk)


def write_checkpoint(root: Path, size_gb: float, dtype: str, n_shards: int, n_embd: int, n_vocab: int) -> dict:
    cfg = plan_model(size_gb, 4 if dtype == "F32" else 2, n_embd, n_vocab)
    shapes = tensor_shapes(cfg)
    names = list(shapes)
    per = -(-len(names) // n_shards)
    block = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float32)
    weight_map = {}
    for k in range(n_shards):
        group = names[k * per:(k + 1) * per]
        fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        write_shard(root / fname, {n: shapes[n] for n in group}, dtype, block)
        weight_map.update({n: fname for n in group})
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps(cfg))
    tok, tok_config, _ = small_tokenizer(["[respond]", "[refuse]"])
    (root / "tokenizer.json").write_text(json.dumps(tok))
    (root / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return cfg


def _rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(peak RSS, peak anonymous RSS sampled every 20 ms, seconds) of a child process.

    Peak RSS (wait4's ru_maxrss) counts file pages a process maps, e.g. llama.cpp's mmap of its input; the anonymous
    part is the memory the process really needs.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        anon = max(anon, _rss_anon(proc.pid))
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return usage.ru_maxrss * 1024.0, anon, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=2048)
    ap.add_argument("--n-vocab", type=int, default=128256)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--quant", default=None, help="also measure llama.cpp's quantizer, e.g. q4_k_m")
    ap.add_argument("--workdir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--json", default=None, help="save the results here")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="convert-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "hf"
        src.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        cfg = write_checkpoint(src, args.size_gb, args.dtype.upper(), args.shards, args.n_embd, args.n_vocab)
        ckpt = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        print(f"checkpoint: {ckpt / GB:.2f} GB {args.dtype}, {args.shards} shards, {cfg['num_hidden_layers']} layers, "
              f"embedding {args.n_vocab}x{args.n_embd} ({time.perf_counter() - t0:.0f} s to write)")
        cli = [sys.executable, "-m", "refusal_edge.cli"]
        baseline, _, _ = measure([sys.executable, "-c", "import refusal_edge.convert.hf_to_gguf, gguf, numpy, tqdm"])
        out = work / "model.gguf"
        peak, anon, secs = measure(cli + ["convert", str(src), "-o", str(out), "--outtype", args.outtype, "-q", "--force",
                                    "--category", "refuse=[refuse]"])
        goal = 0.25 * ckpt + GB
        result = {"checkpoint_bytes": ckpt, "dtype": args.dtype, "shards": args.shards, "outtype": args.outtype,
                  "convert_peak_rss_bytes": peak, "convert_peak_anon_bytes": anon, "convert_seconds": secs, "python_baseline_rss_bytes": baseline,
                  "goal_bytes": goal, "meets_goal": peak <= goal, "peak_over_checkpoint": peak / ckpt,
                  "output_bytes": out.stat().st_size}
        print(f"convert:  peak RSS {peak / GB:.3f} GB = {peak / ckpt:.3f} x checkpoint "
              f"(goal <= 0.25 x + 1 GB = {goal / GB:.2f} GB: {'met' if peak <= goal else 'MISSED'}); "
              f"anonymous {anon / GB:.3f} GB; {secs:.0f} s, {ckpt / GB / secs:.2f} GB/s; interpreter + imports alone "
              f"{baseline / GB:.3f} GB")
        if args.quant:
            q = work / f"model.{args.quant}.gguf"
            qpeak, qanon, qsecs = measure(cli + ["quantize", str(out), "-o", str(q), "--type", args.quant, "-q", "--force"])
            result.update(quant=args.quant, quantize_peak_rss_bytes=qpeak, quantize_peak_anon_bytes=qanon,
                          quantize_seconds=qsecs)
            print(f"quantize: peak RSS {qpeak / GB:.3f} GB, anonymous {qanon / GB:.3f} GB (llama.cpp mmaps its "
                  f"{out.stat().st_size / GB:.2f} GB input; those pages count in RSS but are page cache); {qsecs:.0f} s")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
