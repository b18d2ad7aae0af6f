"""SentencePiece-style vocabularies -> llama.cpp's ``llama`` (SPM) tokenizer: pieces, scores and token types.

Two sources: ``tokenizer.model`` read with the ``sentencepiece`` package (Llama-2, Mistral, Phi-3, Gemma 3), or a
tokenizer.json whose BPE model has ``byte_fallback`` (what transformers saves for Gemma without tokenizer.model).
llama.cpp's SPM tokenizer merges the adjacent pair whose concatenation is the vocabulary piece with the highest
score; a BPE merge list applies merges by rank, so the piece a merge of rank r produces gets score -r.
"""

from __future__ import annotations

from pathlib import Path

from refusal_edge.extras import missing_message
from refusal_edge.metadata import TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED

from .errors import ConversionError
from .tokenizer import (TOKEN_TYPE_BYTE, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_UNUSED, TokenizerFields, _add_token,
                        _chat_template, _optional_json, _special_ids, vocab_tokens)

SPACE = "\u2581"  # SentencePiece's visible space
NO_MERGE_SCORE = -1e9  # a multi-character piece no merge produces: llama.cpp must not form it either


def sentencepiece_fields(root: Path, data: dict | None) -> TokenizerFields:
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise ConversionError(f"{root} has a SentencePiece tokenizer (tokenizer.model); "
                              + missing_message("sentencepiece", "reading it")) from None
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(root / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.IdToPiece(i))
        scores.append(float(sp.GetScore(i)))
        kind = TOKEN_TYPE_NORMAL
        if sp.IsUnknown(i):
            kind = TOKEN_TYPE_UNKNOWN
        elif sp.IsControl(i):
            kind = TOKEN_TYPE_CONTROL
        elif sp.IsUnused(i):
            kind = TOKEN_TYPE_UNUSED
        elif sp.IsByte(i):
            kind = TOKEN_TYPE_BYTE
        types.append(kind)
    # Gemma's model has no dummy prefix: "hello" is not "▁hello" there, and llama.cpp must be told.
    add_space_prefix = bool(sp.EncodeAsPieces("a")) and sp.EncodeAsPieces("a")[0].startswith(SPACE)
    return _with_added(root, data, tokens, scores, types, add_space_prefix, n_model=sp.vocab_size())


def bpe_byte_fallback_fields(root: Path, data: dict) -> TokenizerFields:
    """A tokenizer.json BPE with byte fallback (SentencePiece converted by transformers) as an SPM vocabulary."""
    model = data["model"]
    tokens = vocab_tokens(root, data)
    n = len(tokens)
    rank = {}
    for r, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    scores = [-float(rank[t]) if t in rank else (0.0 if len(t) == 1 else NO_MERGE_SCORE) for t in tokens]
    unk = model.get("unk_token")
    types = [TOKEN_TYPE_UNKNOWN if t == unk else TOKEN_TYPE_BYTE if _is_byte_piece(t) else TOKEN_TYPE_NORMAL
             for t in tokens]
    return _with_added(root, data, tokens, scores, types, _prepends_space(data), n_model=n)


def _is_byte_piece(text: str) -> bool:
    return len(text) == 6 and text.startswith("<0x") and text.endswith(">")


def _prepends_space(data: dict) -> bool:
    """A Prepend("▁") normalizer (Llama-2) or a Metaspace pre-tokenizer that prepends: llama.cpp's
    add_space_prefix."""
    def steps(node):
        node = node or {}
        return node.get("normalizers") or node.get("pretokenizers") or [node]

    for step in steps(data.get("normalizer")):
        if step.get("type") == "Prepend" and step.get("prepend") == SPACE:
            return True
    for step in steps(data.get("pre_tokenizer")):
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") != "never" and step.get("add_prefix_space", True)
    return False


def _with_added(root: Path, data: dict | None, tokens: list, scores: list, types: list, add_space_prefix: bool,
                n_model: int) -> TokenizerFields:
    """Added tokens over the model's pieces (as llama.cpp's converter: special ones CONTROL, others USER_DEFINED)."""
    added = {t["content"]: (t["id"], t.get("special", False)) for t in (data or {}).get("added_tokens") or []}
    for text, i in _optional_json(root / "added_tokens.json").items():
        added.setdefault(text, (i, False))
    for text, (i, special) in sorted(added.items(), key=lambda kv: kv[1][0]):
        while i >= len(tokens):
            tokens.append(f"[PAD{len(tokens)}]")
            scores.append(-1000.0)
            types.append(TOKEN_TYPE_UNUSED)
        if tokens[i] != text or i >= n_model:
            tokens[i], scores[i] = text, -1000.0
            types[i] = TOKEN_TYPE_CONTROL if special else TOKEN_TYPE_USER_DEFINED
        elif special and types[i] in (TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED):
            types[i] = TOKEN_TYPE_CONTROL  # e.g. Gemma's <start_of_turn>: a plain piece in the model, special in HF
    config = _optional_json(root / "tokenizer_config.json")
    add_bos = config.get("add_bos_token")
    if not isinstance(add_bos, bool):  # transformers >= 5 saves no add_bos_token: its post-processor says
        add_bos = _add_token(config, data or {}, "bos", tokens)
    return TokenizerFields(
        model="llama", pre="default", tokens=tokens, types=types, scores=scores,
        special_ids=_special_ids(root, tokens, config),
        add_bos=add_bos if isinstance(add_bos, bool) else True,
        add_eos=config.get("add_eos_token") if isinstance(config.get("add_eos_token"), bool) else None,
        add_space_prefix=add_space_prefix,
        chat_template=_chat_template(root, config),
    )
