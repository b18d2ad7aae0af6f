"""A vocabulary-only GGUF from a Hugging Face checkpoint's tokenizer files, for a remote engine serving that checkpoint.

A vLLM user serves the Hugging Face checkpoint itself and has no GGUF. The runtime still needs the vocabulary, chat
template and refusal spec on its side, and it reads them with llama.cpp (``vocab_only``), exactly as from a
converted GGUF: so this writes what ``refusal-edge convert`` would write, less the tensors. Weights are not read.
Nothing here imports torch: the runtime's remote connect path calls it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from .errors import ConversionError
from .llama_tensors import arch_params
from .refusal import resolve_spec
from .tokenizer import llama_cpp_safe_name
from .tokenizer_files import load_tokenizer
from .writer import write_gguf

# Every file ``load_tokenizer`` and ``arch_params`` read: the cache key covers them all.
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")
# Bumped when what this module writes changes, so older cached files are not reused.
FORMAT = "refusal-edge vocab-only 2"


def tokenizer_digest(root: Path) -> str:
    """sha256 over the names and bytes of the tokenizer files present."""
    digest = hashlib.sha256(FORMAT.encode())
    for name in TOKENIZER_FILES:
        path = root / name
        if path.is_file():
            digest.update(f"\0{name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def write_vocab_gguf(root: str | Path, output: str | Path, force: bool = False) -> Path:
    """Write the GGUF ``convert`` would make of the checkpoint directory ``root``, metadata and tokenizer only."""
    root = Path(root)
    if not (root / "config.json").is_file():
        raise ConversionError(f"{root} has no config.json: give the served checkpoint's directory")
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {root / 'config.json'}: {exc}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{root / 'config.json'} is not a JSON object")
    params = arch_params(config, name=config.get("_name_or_path") or root.resolve().name)
    tokenizer = load_tokenizer(root)
    # The served embedding has config.json's vocab_size rows; `convert` pads the vocabulary to them, so does this.
    if not params.n_vocab:
        params = replace(params, n_vocab=len(tokenizer.tokens))
    tokenizer = tokenizer.padded_to(params.n_vocab)
    if params.n_vocab < len(tokenizer.tokens):
        raise ConversionError(f"{root / 'config.json'} says vocab_size {params.n_vocab}, the tokenizer has "
                              f"{len(tokenizer.tokens)} tokens")
    params = replace(params, name=llama_cpp_safe_name(params.name, tokenizer.tokens)[0])
    spec = resolve_spec(tokenizer.tokens)
    return write_gguf(output, params, tokenizer, [], spec, force=force, progress=False)


def cached_vocab_gguf(root: str | Path, cache: Path) -> Path:
    """The vocabulary-only GGUF of the checkpoint directory ``root`` under ``cache``, written on first use and
    reused while the tokenizer files stay the same."""
    root = Path(root)
    if not (root / "tokenizer.json").is_file() and not (root / "tokenizer.model").is_file():
        raise ConversionError(f"{root} has no tokenizer files (tokenizer.json or tokenizer.model): give the GGUF the "
                              "engine serves or the served checkpoint's directory")
    path = cache / f"{tokenizer_digest(root)}.gguf"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        write_vocab_gguf(root, path, force=True)
    return path
