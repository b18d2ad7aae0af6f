"""A checkpoint's tokenizer, whichever kind it is: byte-level BPE (``tokenizer.py``) or SentencePiece-style
(``spm_tokenizer.py``, which builds on the former's fields)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConversionError
from .spm_tokenizer import bpe_byte_fallback_fields, sentencepiece_fields
from .tokenizer import TokenizerFields, _bpe, _read_json


def load_tokenizer(root: Path, pre_tokenizer: str | None = None) -> TokenizerFields:
    tokenizer_json = root / "tokenizer.json"
    spm = root / "tokenizer.model"
    if tokenizer_json.is_file():
        data = _read_json(tokenizer_json)
        model = data.get("model") or {}
        if model.get("type") == "BPE" and not model.get("byte_fallback"):
            return _bpe(root, data, pre_tokenizer)
        if spm.is_file():
            return sentencepiece_fields(root, data)
        if model.get("type") == "BPE":
            return bpe_byte_fallback_fields(root, data)
        raise ConversionError(
            f"{tokenizer_json}: a {model.get('type', 'unknown')} tokenizer is not supported without tokenizer.model; "
            "convert with llama.cpp's convert_hf_to_gguf.py and add the refusal metadata with `refusal-edge annotate`"
        )
    if spm.is_file():
        return sentencepiece_fields(root, None)
    raise ConversionError(f"{root} has no tokenizer (tokenizer.json or tokenizer.model)")
