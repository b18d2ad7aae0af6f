"""A GGUF's byte-level BPE vocabulary as Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json).

The inverse of ``convert.tokenizer`` for ``tokenizer.ggml.model == "gpt2"``: the vocabulary and merges as a BPE
model, llama.cpp's pre-tokenizer name as tokenizers' pre-tokenizer, CONTROL tokens (the refusal tokens among them)
as added *special* tokens and USER_DEFINED ones as plain added tokens, each with its own id. Written so that
``convert`` reads back the very same fields: a round trip HF -> GGUF -> HF -> GGUF gives the same GGUF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from refusal_edge.metadata import TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED

from .errors import ConversionError
from .tokenizer import SPLIT_REGEX_PRE, TOKEN_TYPE_UNUSED

PRE_REGEX = {name: regex for regex, name in SPLIT_REGEX_PRE.items()}
SPECIAL_KEYS = ("bos", "eos", "unk", "pad", "sep")


@dataclass(frozen=True)
class GGUFVocabulary:
    """The ``tokenizer.ggml.*`` fields of a GGUF (``special_ids`` keys: bos, eos, unk, pad, sep)."""

    model: str
    pre: str | None
    tokens: Sequence[str]
    types: Sequence[int]
    merges: Sequence[str]
    special_ids: Mapping[str, int]
    add_bos: bool | None
    add_eos: bool | None
    chat_template: str | None
    scores: Sequence[float] | None = None  # SentencePiece vocabularies ("llama")
    add_space_prefix: bool | None = None


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def pre_tokenizer(pre: str | None) -> dict:
    """tokenizers' pre-tokenizer for llama.cpp's pre-tokenizer name (the inverse of detect_pre_tokenizer)."""
    if pre in PRE_REGEX:
        split = {"type": "Split", "pattern": {"Regex": PRE_REGEX[pre]}, "behavior": "Isolated", "invert": False}
        return {"type": "Sequence", "pretokenizers": [split, _byte_level(False)]}
    if pre == "smollm":
        return {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                      _byte_level(True)]}
    if pre in ("gpt-2", "default", None):
        return _byte_level(True)
    raise ConversionError(f"the GGUF's pre-tokenizer {pre!r} has no Hugging Face equivalent here (exported: "
                          f"{', '.join([*PRE_REGEX, 'smollm', 'gpt-2'])})")


def vocabulary_size(vocab: GGUFVocabulary) -> int:
    """Tokens the tokenizer holds: the GGUF's, less the UNUSED placeholders padding it to the embedding's rows
    (``convert`` pads them back from config.json's vocab_size)."""
    n = len(vocab.tokens)
    while n and vocab.types[n - 1] == TOKEN_TYPE_UNUSED:
        n -= 1
    return n


def tokenizer_json(vocab: GGUFVocabulary) -> dict:
    if vocab.model != "gpt2":
        raise ConversionError(f"the GGUF's vocabulary is {vocab.model!r} (SentencePiece: Phi-3-mini, Mistral, Gemma, "
                              "Llama-2); exporting handles byte-level BPE ('gpt2': Llama-3, SmolLM2, Qwen2, "
                              "Phi-4-mini) only: a GGUF keeps no SentencePiece model to rebuild tokenizer.model from")
    n = vocabulary_size(vocab)
    index: dict[str, int] = {}
    for i, text in enumerate(vocab.tokens[:n]):
        if index.setdefault(text, i) != i:
            raise ConversionError(f"token {text!r} appears twice in the GGUF's vocabulary (ids {index[text]} and "
                                  f"{i}): a Hugging Face vocabulary cannot hold it")
    added = [{"id": i, "content": vocab.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": vocab.types[i] == TOKEN_TYPE_CONTROL}
             for i in range(n) if vocab.types[i] in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": pre_tokenizer(vocab.pre), "post_processor": _post_processor(vocab),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": index, "merges": list(vocab.merges)},
    }


def _post_processor(vocab: GGUFVocabulary) -> dict:
    """BOS (and EOS) added by the tokenizer exactly when the GGUF says llama.cpp adds them."""
    ends = [k for k, on in (("bos", vocab.add_bos), ("eos", vocab.add_eos)) if on and k in vocab.special_ids]
    if not ends:
        return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    text = {k: vocab.tokens[vocab.special_ids[k]] for k in ends}

    def seq(name: str) -> list[dict]:
        parts = [{"Sequence": {"id": name, "type_id": 0}}]
        if "bos" in text:
            parts.insert(0, {"SpecialToken": {"id": text["bos"], "type_id": 0}})
        if "eos" in text:
            parts.append({"SpecialToken": {"id": text["eos"], "type_id": 0}})
        return parts

    return {"type": "TemplateProcessing", "single": seq("A"), "pair": seq("A") + seq("B"),
            "special_tokens": {t: {"id": t, "ids": [vocab.special_ids[k]], "tokens": [t]} for k, t in text.items()}}


def tokenizer_files(vocab: GGUFVocabulary) -> dict[str, object]:
    """{file name: JSON content or bytes}: tokenizer.json for a byte-level BPE, tokenizer.model for SentencePiece."""
    if vocab.model != "llama":
        return {"tokenizer.json": tokenizer_json(vocab)}
    from .spm_export import sentencepiece_model

    n = vocabulary_size(vocab)
    if vocab.scores is None:
        raise ConversionError("the GGUF's SentencePiece vocabulary has no scores (tokenizer.ggml.scores)")
    return {"tokenizer.model": sentencepiece_model(vocab.tokens[:n], vocab.scores[:n], vocab.types[:n],
                                                   _space_prefix(vocab), dict(vocab.special_ids))}


def _space_prefix(vocab: GGUFVocabulary) -> bool:
    return True if vocab.add_space_prefix is None else bool(vocab.add_space_prefix)  # llama.cpp's default


def tokenizer_config(vocab: GGUFVocabulary, context_length: int) -> dict:
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                    "model_max_length": int(context_length)}
    if vocab.model == "llama":  # transformers builds its tokenizer from tokenizer.model
        config.update(tokenizer_class="LlamaTokenizer", legacy=False, add_prefix_space=_space_prefix(vocab))
    for kind in SPECIAL_KEYS:
        if kind in vocab.special_ids:
            config[f"{kind}_token"] = vocab.tokens[vocab.special_ids[kind]]
    config["add_bos_token"] = bool(vocab.add_bos)
    if vocab.add_eos is not None:
        config["add_eos_token"] = bool(vocab.add_eos)
    if vocab.chat_template:
        config["chat_template"] = vocab.chat_template
    return config
