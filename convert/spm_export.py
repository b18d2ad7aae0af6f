"""A GGUF's SentencePiece vocabulary (``tokenizer.ggml.model == "llama"``) as a SentencePiece ``tokenizer.model``.

The inverse of ``spm_tokenizer.sentencepiece_fields``: every piece with its score and type (the added tokens too:
CONTROL pieces, the refusal tokens among them, are never produced from text by SentencePiece, as llama.cpp never
produces them), a BPE model with byte fallback where the vocabulary has byte pieces, and the normalizer llama.cpp's
``add_space_prefix`` describes. The protobuf is written by hand (a few fields of ``sentencepiece_model.proto``), so
exporting needs neither protobuf nor sentencepiece.
"""

from __future__ import annotations

import struct
from typing import Sequence

from refusal_edge.metadata import TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED

from .errors import ConversionError
from .tokenizer import TOKEN_TYPE_BYTE, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_UNUSED

# llama.cpp's token types are SentencePiece's piece types (both number NORMAL 1 .. BYTE 6)
PIECE_TYPES = (TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_UNUSED,
               TOKEN_TYPE_BYTE)
MODEL_TYPE_BPE = 2


def sentencepiece_model(tokens: Sequence[str], scores: Sequence[float], types: Sequence[int],
                        add_space_prefix: bool, special_ids: dict) -> bytes:
    """The serialized ModelProto (pieces = 1, trainer_spec = 2, normalizer_spec = 3)."""
    if TOKEN_TYPE_UNKNOWN not in types:
        raise ConversionError("the GGUF's SentencePiece vocabulary has no unknown token: no tokenizer.model is "
                              "possible without one")
    out = bytearray()
    for text, score, kind in zip(tokens, scores, types):
        if kind not in PIECE_TYPES:
            raise ConversionError(f"token {text!r} has type {kind}, which SentencePiece does not know")
        piece = _string(1, text) + _tag(2, 5) + struct.pack("<f", float(score)) + _varint_field(3, int(kind))
        out += _message(1, piece)
    trainer = _varint_field(3, MODEL_TYPE_BPE) + _varint_field(4, len(tokens))
    trainer += _varint_field(35, int(TOKEN_TYPE_BYTE in types))  # byte_fallback
    for field, kind in ((40, "unk"), (41, "bos"), (42, "eos"), (43, "pad")):
        trainer += _varint_field(field, special_ids.get(kind, -1))
    out += _message(2, trainer)
    normalizer = (_string(1, "identity") + _varint_field(3, int(add_space_prefix)) + _varint_field(4, 0)
                  + _varint_field(5, 1))  # add_dummy_prefix, remove_extra_whitespaces off, escape_whitespaces
    out += _message(3, normalizer)
    return bytes(out)


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are ten-byte varints
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _varint_field(field: int, value: int) -> bytes:
    return _tag(field, 0) + _varint(value)


def _message(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _string(field: int, text: str) -> bytes:
    return _message(field, text.encode("utf-8"))
