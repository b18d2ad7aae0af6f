"""`refusal-edge convert MODEL.gguf --to hf -o DIR`: a GGUF as a Hugging Face checkpoint directory, for the families
of architectures.py that say how (Llama, Qwen2, Qwen3, SmolLM3, Phi-3, Gemma 3; the others refuse, naming why).

For engines that serve Hugging Face checkpoints (vLLM) and for transformers: every tensor dequantized (gguf-py's
``gguf.quants.dequantize``), the Q/K rows put back in HF's rotate-half order (Gemma's 1 + w norms back to w),
config.json from the ``{arch}.*`` hyperparameters (plus the family's own keys, family_export.py), safetensors in f32
(exact for every GGUF type) or bf16, and the vocabulary as tokenizer.json (byte-level BPE) or tokenizer.model
(SentencePiece, spm_export.py) + tokenizer_config.json (hf_tokenizer_export.py). A GGUF without ``output.weight``
has tied embeddings. The directory appears whole or not at all. Weights are the GGUF's: a quantized GGUF exports
its quantized values.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .architectures import FAMILIES, TOP_LEVEL, export_family
from .errors import ConversionError
from .family_export import FAMILY_KEYS, field, float32_text
from .hf_tokenizer_export import GGUFVocabulary, tokenizer_config, tokenizer_files, vocabulary_size
from .llama_tensors import unpermute
from .output import check_space
from .rope import YARN_OPTIONS
from .safetensors_out import DTYPES, write_safetensors

GLOBAL_NAMES = {f"{gguf}.weight": f"{hf}.weight" for hf, gguf in TOP_LEVEL.items()}
WEIGHTS = "model.safetensors"
ROPE_TENSORS = ("rope_factors_",)  # longrope's factors: config.json values on the Hugging Face side


@dataclass
class ExportResult:
    output: Path
    config: dict
    n_tensors: int


def hf_name(name: str, hf_arch: str) -> str:
    """The HF name of a GGUF tensor: the inverse of the family's table in architectures.py."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    block = {gguf: hf for hf, gguf in FAMILIES[hf_arch].block.items()}
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in block and parts[3] in ("weight", "bias"):
        return f"model.layers.{parts[1]}.{block[parts[2]]}.{parts[3]}"
    raise ConversionError(f"tensor {name!r} has no Hugging Face counterpart in a {hf_arch} checkpoint")


def read_vocabulary(reader: gguf.GGUFReader) -> GGUFVocabulary:
    tokens = field(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise ConversionError("the GGUF has no vocabulary (tokenizer.ggml.tokens)")
    keys = gguf.Keys.Tokenizer  # (llama.cpp spells them unknown_, padding_, seperator_token_id)
    specials = {k: field(reader, key) for k, key in (("bos", keys.BOS_ID), ("eos", keys.EOS_ID), ("unk", keys.UNK_ID),
                                                      ("pad", keys.PAD_ID), ("sep", keys.SEP_ID))}
    return GGUFVocabulary(
        model=field(reader, "tokenizer.ggml.model", "gpt2"), pre=field(reader, "tokenizer.ggml.pre"),
        tokens=tokens, types=field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens),
        merges=field(reader, "tokenizer.ggml.merges") or [],
        special_ids={k: int(v) for k, v in specials.items() if v is not None and 0 <= int(v) < len(tokens)},
        add_bos=field(reader, "tokenizer.ggml.add_bos_token"), add_eos=field(reader, "tokenizer.ggml.add_eos_token"),
        chat_template=field(reader, "tokenizer.chat_template"),
        scores=field(reader, "tokenizer.ggml.scores"),
        add_space_prefix=field(reader, "tokenizer.ggml.add_space_prefix"),
    )


def model_config(reader: gguf.GGUFReader, vocab: GGUFVocabulary, n_rows: int, tied: bool, dtype: str) -> dict:
    arch = field(reader, "general.architecture")
    architecture, family = export_family(str(arch))
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ConversionError("the GGUF has Llama-3.1 rope scaling (rope_freqs.weight), whose parameters a GGUF "
                              "does not keep: export the original checkpoint instead")

    def a(key, default=None):
        value = field(reader, f"{arch}.{key}", default)
        if value is None:
            raise ConversionError(f"the GGUF lacks {arch}.{key}")
        return value

    n_embd, n_head = int(a("embedding_length")), int(a("attention.head_count"))
    head_dim = int(a("attention.key_length", n_embd // n_head))
    config = {
        "architectures": [architecture], "model_type": family.model_type,
        "_name_or_path": field(reader, "general.name") or "",
        "vocab_size": n_rows, "hidden_size": n_embd, "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")), "num_attention_heads": n_head,
        # llama.cpp's default when the key is missing: anything else silently breaks GQA
        "num_key_value_heads": int(a("attention.head_count_kv", n_head)),
        "max_position_embeddings": int(a("context_length")),
        "rms_norm_eps": float32_text(a("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float32_text(a("rope.freq_base", 10000.0)),
        "hidden_act": "silu", "tie_word_embeddings": tied, "torch_dtype": {"f32": "float32", "bf16": "bfloat16"}[dtype],
        "initializer_range": 0.02, "use_cache": True,
    }
    if head_dim != n_embd // n_head:
        config["head_dim"] = head_dim
    config.update(family.export_keys(config))
    if architecture in FAMILY_KEYS:
        config.update(FAMILY_KEYS[architecture](reader, str(arch), config))
    scaling = field(reader, f"{arch}.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "rope_type": "linear",
                                  "factor": float32_text(a("rope.scaling.factor"))}
    elif scaling == "yarn":
        config["rope_scaling"] = {"type": "yarn", "rope_type": "yarn", "factor": float32_text(a("rope.scaling.factor")),
                                  "original_max_position_embeddings": int(a("rope.scaling.original_context_length"))}
        for hf_key, key in YARN_OPTIONS.items():  # written only where the checkpoint gave them
            value = field(reader, f"{arch}.rope.scaling.yarn_{key}")
            if value is not None:
                config["rope_scaling"][hf_key] = float32_text(value)
    elif scaling not in (None, "none"):
        raise ConversionError(f"the GGUF's rope scaling {scaling!r} is not exported")
    for kind in ("bos", "eos", "pad"):  # null when the GGUF has none: a family's default (SmolLM3's pad) is wrong
        config[f"{kind}_token_id"] = vocab.special_ids.get(kind)
    return config


def export_gguf(source: str | os.PathLike, output: str | os.PathLike, *, outtype: str = "f32", force: bool = False,
                log=print) -> ExportResult:
    """Write the checkpoint directory ``output`` from the GGUF ``source``."""
    if outtype not in DTYPES:
        raise ConversionError(f"unsupported --outtype {outtype!r} for --to hf: choose one of {', '.join(DTYPES)}")
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if not source.is_file():
        raise ConversionError(f"GGUF file not found: {source}")
    if output.exists() and not (output.is_dir() and (force or not any(output.iterdir()))):
        raise ConversionError(f"output {output} already exists" +
                              ("; pass --force to overwrite it" if output.is_dir() else " and is not a directory"))
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ConversionError(f"output directory {parent} does not exist")
    try:
        reader = gguf.GGUFReader(str(source))
    except Exception as exc:  # noqa: BLE001 - gguf-py reports a cut or hostile file with whatever numpy raised
        raise ConversionError(f"{source} is not a readable GGUF: {exc}") from None
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ConversionError(f"{source} has no token_embd.weight: not a llama-family model")
    vocab = read_vocabulary(reader)
    n_rows = int(tensors["token_embd.weight"].shape[1])  # GGUF lists dimensions innermost first
    tied = "output.weight" not in tensors
    config = model_config(reader, vocab, n_rows, tied, outtype)
    if vocabulary_size(vocab) > n_rows:
        raise ConversionError(f"the GGUF's vocabulary has {vocabulary_size(vocab)} tokens, its embedding {n_rows}")
    hf_arch = config["architectures"][0]
    plan = [(hf_name(name, hf_arch), tuple(int(n) for n in reversed(t.shape)), _loader(t, config)) for name, t in
            tensors.items() if not name.startswith(ROPE_TENSORS)]
    check_space(parent, sum(int(np.prod(s)) for _, s, _ in plan) * DTYPES[outtype][1] + (1 << 24))

    files = {
        "config.json": config,
        "generation_config.json": {k: config[k] for k in ("bos_token_id", "eos_token_id") if config[k] is not None},
        "tokenizer_config.json": tokenizer_config(vocab, config["max_position_embeddings"]),
        **tokenizer_files(vocab),
    }
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=parent))
    try:
        for name, content in files.items():
            if isinstance(content, bytes):
                (work / name).write_bytes(content)
            else:
                (work / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        write_safetensors(work / WEIGHTS, plan, outtype, {"format": "pt", "source": source.name})
        _publish(work, output)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    log(f"wrote {output} ({len(plan)} tensors, {outtype}, vocabulary {vocabulary_size(vocab)} of {n_rows} rows"
        f"{', tied embeddings' if tied else ''})")
    return ExportResult(output, config, len(plan))


def _loader(t, config: dict):
    """The tensor as float32 in HF layout, read when its turn comes."""
    def load() -> np.ndarray:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        w = w.reshape([int(n) for n in reversed(t.shape)])
        if not np.all(np.isfinite(w)):
            raise ConversionError(f"tensor {t.name} holds NaN or infinite values: the GGUF is corrupt")
        family = FAMILIES[config["architectures"][0]]
        if family.norm_offset and t.name.endswith("norm.weight"):  # Gemma's GGUF stores 1 + w
            w = w - np.float32(family.norm_offset)
        permuted = family.permute_qk
        if permuted and t.name.endswith((".attn_q.weight", ".attn_q.bias")):
            w = unpermute(w, config["num_attention_heads"])
        elif permuted and t.name.endswith((".attn_k.weight", ".attn_k.bias")):
            w = unpermute(w, config["num_key_value_heads"])
        return w

    return load


def _publish(work: Path, output: Path) -> None:
    """Rename the finished directory into place; into an existing (empty, or --force) one, file by file."""
    if not output.exists():
        os.rename(work, output)
        return
    for item in work.iterdir():
        os.replace(item, output / item.name)
