"""What a GGUF says about itself, read from its header alone: no weights are loaded, no llama.cpp involved."""

from __future__ import annotations

from pathlib import Path

from .errors import MetadataError
from .files import human_size
from .gguf_header import check_data, check_gguf_file, read_header
from .metadata import KEY_SPEC, TOKEN_TYPE_CONTROL, RefusalSpec, discover

_TOKEN_TYPES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}


def describe(path: Path) -> dict:
    check_gguf_file(path)
    header = read_header(path)
    check_data(header)
    value = header.get

    arch = value("general.architecture", "?")
    tokens = value("tokenizer.ggml.tokens", [])
    types = value("tokenizer.ggml.token_type", [])
    file_type = value("general.file_type")
    problems: list[str] = []
    try:
        spec = RefusalSpec.from_gguf_fields({KEY_SPEC: value(KEY_SPEC)} if KEY_SPEC in header.kv else {})
        source = "refusal.spec" if spec else "none: recognised from the vocabulary"
        spec = spec or discover(tokens)
    except MetadataError as exc:
        spec, source = None, "invalid"
        problems.append(str(exc))
    if spec is None and not problems:
        source = "none"
        problems.append("no refusal metadata and no paper tokens in the vocabulary: not a refusal-token model")
    listed = []
    if spec is not None:
        for ref in spec.refs:
            in_vocab = 0 <= ref.id < len(tokens)
            kind = int(types[ref.id]) if in_vocab and ref.id < len(types) else None
            if not in_vocab or tokens[ref.id] != ref.token:
                problems.append(f"token {ref.token!r} is not at id {ref.id} of the vocabulary")
            elif kind != TOKEN_TYPE_CONTROL:
                problems.append(f"token {ref.token!r} is {_TOKEN_TYPES.get(kind, kind)}, not CONTROL")
            listed.append({"name": ref.name, "token": ref.token, "id": ref.id,
                           "type": _TOKEN_TYPES.get(kind, str(kind)), "control": kind == TOKEN_TYPE_CONTROL})
    return {
        "file": str(path),
        "size": human_size(path.stat().st_size),
        "size_bytes": path.stat().st_size,
        "architecture": arch,
        "name": value("general.name", ""),
        "quantization": quantization_name(file_type),
        "context_length": value(f"{arch}.context_length"),
        "vocab_size": len(tokens),
        "chat_template": "yes" if "tokenizer.chat_template" in header.kv else "no (ChatML fallback)",
        "refusal_metadata": source,
        "tokens": listed,
        "default_policy": spec.default_policy if spec else None,
        "problems": problems,
    }


def quantization_name(file_type) -> str:
    """``general.file_type`` as llama.cpp names the quantization (Q8_0, Q4_K_M, F16); llama.cpp's metadata gives it as a
    string. "unknown" when absent."""
    import gguf

    if file_type is None or file_type == "":
        return "unknown"
    try:
        return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"file type {file_type}"
