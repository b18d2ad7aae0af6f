"""Tokenizer fields for the GGUF: vocabulary, token types, merges, special ids, pre-tokenizer, chat template.

Byte-level BPE (Llama-3, SmolLM2/3, Qwen2/3) is read from tokenizer.json alone. SentencePiece-style vocabularies
(tokenizer.model: Llama-2, Mistral, Phi-3, Gemma 3; or a byte-fallback BPE tokenizer.json) are in spm_tokenizer.py;
tokenizer_files.py picks between the two.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from refusal_edge.metadata import TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED

from .errors import ConversionError

TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_UNUSED, TOKEN_TYPE_BYTE = 2, 5, 6

# tokenizers' pre-tokenizer regexes -> llama.cpp's pre-tokenizer names (llama-vocab.cpp).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k (gpt-4o): Phi-4-mini's byte-level BPE
GPT4O_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEX_PRE = {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2", GPT4O_REGEX: "gpt-4o"}

# End-of-turn tokens by text, most specific first; llama.cpp stops generation on each.
EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
EOM_TOKENS = ("<|eom_id|>",)


@dataclass(frozen=True)
class TokenizerFields:
    """Everything ``tokenizer.*`` in a GGUF holds. ``special_ids`` keys: bos, eos, unk, pad, sep, eot, eom."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: Sequence[str]
    types: Sequence[int]
    pre: str | None = None
    scores: Sequence[float] | None = None
    merges: Sequence[str] = ()
    special_ids: Mapping[str, int] = field(default_factory=dict)
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    chat_template: str | Sequence[Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if len(self.types) != len(self.tokens) or (self.scores is not None and len(self.scores) != len(self.tokens)):
            raise ConversionError("tokenizer: token, type and score lists differ in length")

    def with_control(self, ids: Sequence[int]) -> "TokenizerFields":
        types = list(self.types)
        for i in ids:
            types[i] = TOKEN_TYPE_CONTROL
        return replace(self, types=types)

    def padded_to(self, n: int) -> "TokenizerFields":
        """llama.cpp's convention when the embedding has spare rows: placeholder UNUSED tokens."""
        extra = n - len(self.tokens)
        if extra <= 0:
            return self
        pads = [f"[PAD{i}]" for i in range(len(self.tokens), n)]
        scores = None if self.scores is None else [*self.scores, *([-1000.0] * extra)]
        return replace(self, tokens=[*self.tokens, *pads], types=[*self.types, *([TOKEN_TYPE_UNUSED] * extra)],
                       scores=scores)

    def write(self, w) -> None:
        """Add the fields to a gguf.GGUFWriter."""
        w.add_tokenizer_model(self.model)
        if self.pre:
            w.add_tokenizer_pre(self.pre)
        w.add_token_list(list(self.tokens))
        w.add_token_types([int(t) for t in self.types])
        if self.scores is not None:
            w.add_token_scores([float(s) for s in self.scores])
        if self.merges:
            w.add_token_merges(list(self.merges))
        handlers = {"bos": w.add_bos_token_id, "eos": w.add_eos_token_id, "unk": w.add_unk_token_id,
                    "pad": w.add_pad_token_id, "sep": w.add_sep_token_id, "eot": w.add_eot_token_id,
                    "eom": w.add_eom_token_id}
        for kind, token_id in self.special_ids.items():
            handlers[kind](int(token_id))
        if self.add_bos is not None:
            w.add_add_bos_token(self.add_bos)
        if self.add_eos is not None:
            w.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            w.add_chat_template(self.chat_template)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None


def _optional_json(path: Path) -> dict:
    return _read_json(path) if path.is_file() else {}


# byte-level BPE --------------------------------------------------------------------------------------------------
def vocab_tokens(root: Path, data: dict) -> list[str]:
    """tokenizer.json's model vocabulary as a list indexed by id (ids must be exactly 0..n-1)."""
    vocab: dict[str, int] = data["model"]["vocab"]
    tokens: list[str | None] = [None] * len(vocab)
    for text, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
            raise ConversionError(f"{root / 'tokenizer.json'}: vocabulary ids are not 0..{len(vocab) - 1}")
        tokens[i] = text
    return tokens


def _bpe(root: Path, data: dict, pre_tokenizer: str | None) -> TokenizerFields:
    tokens = vocab_tokens(root, data)
    n_base = len(tokens)
    types = [TOKEN_TYPE_NORMAL] * n_base
    added = sorted(data.get("added_tokens") or [], key=lambda t: t["id"])
    for tok in added:
        i = tok["id"]
        while i >= len(tokens):
            tokens.append(f"[PAD{len(tokens)}]")
            types.append(TOKEN_TYPE_UNUSED)
        tokens[i] = tok["content"]
        types[i] = TOKEN_TYPE_CONTROL if tok.get("special") else TOKEN_TYPE_USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges") or []]
    config = _optional_json(root / "tokenizer_config.json")
    fields = TokenizerFields(
        model="gpt2", tokens=tokens, types=types, merges=merges,
        pre=pre_tokenizer or detect_pre_tokenizer(data, root / "tokenizer.json"),
        special_ids=_special_ids(root, tokens, config),
        add_bos=bool(_add_token(config, data, "bos", tokens)), add_eos=_add_token(config, data, "eos", tokens),
        chat_template=_chat_template(root, config),
    )
    return fields


def detect_pre_tokenizer(data: dict, where: Path | str = "tokenizer.json") -> str:
    """Name llama.cpp's pre-tokenizer from the structure of tokenizers' ``pre_tokenizer``."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLIT_REGEX_PRE:
            return SPLIT_REGEX_PRE[regex]
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    raise ConversionError(
        f"{where}: unrecognised pre-tokenizer {json.dumps(pre)[:200]}; name llama.cpp's pre-tokenizer type with "
        "--pre-tokenizer (e.g. llama-bpe, qwen2, gpt-4o, smollm, gpt-2), or convert with llama.cpp's convert_hf_to_gguf.py and "
        "run `refusal-edge annotate`"
    )


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _special_ids(root: Path, tokens: Sequence[str], config: dict) -> dict[str, int]:
    index = {t: i for i, t in enumerate(tokens)}
    ids: dict[str, int] = {}
    for kind, key in (("bos", "bos_token"), ("eos", "eos_token"), ("unk", "unk_token"), ("pad", "pad_token"),
                      ("sep", "sep_token")):
        text = _token_text(config.get(key))
        if text is not None and text in index:
            ids[kind] = index[text]
    model_config = _optional_json(root / "config.json")
    for kind in ("bos", "eos", "pad"):
        value = model_config.get(f"{kind}_token_id")
        if kind not in ids and value is not None:
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int) and 0 <= value < len(tokens):
                ids[kind] = value
    for kind, candidates in (("eot", EOT_TOKENS), ("eom", EOM_TOKENS)):
        hit = next((index[t] for t in candidates if t in index), None)
        if hit is not None:
            ids[kind] = hit
    return ids


def _add_token(config: dict, data: dict, kind: str, tokens: Sequence[str]) -> bool | None:
    """tokenizer_config's add_bos_token / add_eos_token, else what tokenizer.json's post-processor does."""
    if isinstance(config.get(f"add_{kind}_token"), bool):
        return config[f"add_{kind}_token"]
    text = _token_text(config.get(f"{kind}_token"))
    post = data.get("post_processor") or {}
    steps = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if step.get("type") == "TemplateProcessing":
            single = step.get("single") or []
            specials = [p["SpecialToken"]["id"] for p in single if "SpecialToken" in p]
            if kind == "bos":
                first = single[0].get("SpecialToken", {}).get("id") if single else None
                return first is not None and (text is None or first == text)
            last = single[-1].get("SpecialToken", {}).get("id") if single else None
            return last is not None and bool(specials) and (text is None or last == text)
    return None


def _chat_template(root: Path, config: dict):
    template = config.get("chat_template")
    if template:
        return template
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    return _optional_json(root / "chat_template.json").get("chat_template") or None


# llama.cpp gives a model whose general.name contains one of these Phi-3's SentencePiece token attributes, looking
# each of these tokens up by text: a vocabulary without them (Phi-4-mini's byte-level BPE) fails to load.
PHI3_NAME_MARKERS = ("phi-3", "phi3")
PHI3_NAME_TOKENS = ("</s>", "<unk>", "<s>", "<|endoftext|>")


def llama_cpp_safe_name(name: str | None, tokens: Sequence[str]) -> tuple[str | None, str | None]:
    """(general.name to write, a note when it had to change): 'phi3' and 'phi-3' become 'phi 3' where the vocabulary
    lacks a token llama.cpp's Phi-3 name rule looks up (``error loading model vocabulary: unordered_map::at``)."""
    if not name or not any(m in name.lower() for m in PHI3_NAME_MARKERS):
        return name, None
    present = set(tokens)
    missing = [t for t in PHI3_NAME_TOKENS if t not in present]
    if not missing:
        return name, None
    safe = re.sub(r"(?i)(phi)-?(3)", r"\1 \2", name)
    return safe, (f"general.name {name!r} is written as {safe!r}: llama.cpp applies Phi-3's SentencePiece token "
                  f"rules to names containing 'phi3' or 'phi-3', and this vocabulary has no {missing[0]}")
