"""What a remote engine's tokenizer source is: the GGUF the engine serves, or the served Hugging Face checkpoint's
directory (its tokenizer files; vLLM serves such checkpoints), turned once into a cached vocabulary-only GGUF."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import ModelLoadError
from ...files import cache_dir


def checkpoint_dir(source: str | os.PathLike) -> Path | None:
    """The Hugging Face checkpoint directory ``source`` names (the directory or its config.json), else None."""
    path = Path(source).expanduser()
    if path.name == "config.json" and path.is_file():
        return path.parent
    return path if path.is_dir() else None


def tokenizer_gguf(source: str | os.PathLike) -> Path:
    """A GGUF to load vocabulary-only: ``source`` itself unless it names a checkpoint, else the vocabulary-only GGUF
    written from the checkpoint's tokenizer files under the cache's ``tokenizers/`` (once per distinct files)."""
    root = checkpoint_dir(source)
    if root is None:
        return Path(source).expanduser()
    try:
        # The converter's tokenizer and GGUF writer (gguf and numpy only; torch stays out): one home for that code.
        from refusal_edge.convert.vocab_only import cached_vocab_gguf
    except ImportError as exc:
        raise ModelLoadError(f"reading the tokenizer files of {root} needs refusal-edge's converter ({exc})") from None
    return cached_vocab_gguf(root, cache_dir() / "tokenizers")
