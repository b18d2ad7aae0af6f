"""The base checkpoint made trainable: its tokenizer and chat template, the decision tokens added, LoRA on every
linear map, and the decision tokens' rows of the input embedding and of the output matrix as their own parameters.

The new rows are ours rather than peft's ``trainable_token_indices``: the output matrix's rows of the new tokens are
what the decision is read from, and with untied embeddings they live in ``lm_head``, which peft's token training
does not cover. Two forward hooks put them in place; ``merged`` writes them into the merged checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..hf_source import HFCheckpoint
from ..llama_tensors import arch_params
from .errors import TrainError

SENTINEL = "\x00USER\x00"  # stands for the user's text while the chat template is rendered


def load_base(path: Path, dtype=torch.float32, progress: bool = True):
    """(model, tokenizer) of a local checkpoint directory that `convert` supports and that has a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()

    if path.is_file():
        raise TrainError(f"{path}: a file, not a Hugging Face checkpoint directory (a GGUF base is exported first: "
                         "see hf_base)")
    if not (path / "config.json").is_file():
        raise TrainError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
    arch_params(HFCheckpoint(path).config)  # the same architecture check as `convert`: fail before training
    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "chat_template", None):
        raise TrainError(f"{path}: the checkpoint has no chat template (tokenizer_config.json chat_template or "
                         "chat_template.jinja): train needs one to render prompts as the runtime will")
    if tok.eos_token_id is None:
        raise TrainError(f"{path}: the tokenizer has no eos token: the end of an answer cannot be taught")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, tok


def hf_base(base: Path, out: Path, log) -> Path:
    """The checkpoint directory to train from: ``base`` itself, or for a GGUF base its export (`convert --to hf`)
    in ``out/base-hf``, made once and reused on --resume (a stamp names the GGUF it came from)."""
    if not (base.is_file() and base.suffix.lower() == ".gguf"):
        return base
    from refusal_edge.files import sha256_file

    from ..errors import ConversionError
    from ..gguf_to_hf import export_gguf

    target, stamp = out / "base-hf", out / "base-hf.source"
    digest = sha256_file(base)
    if target.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        return target
    log(f"exporting the GGUF base {base.name} to a Hugging Face checkpoint ({target})")
    out.mkdir(parents=True, exist_ok=True)
    try:
        export_gguf(base, target, outtype="f32", force=True, log=lambda *_: None)
    except ConversionError as exc:
        raise TrainError(f"{base}: cannot train from this GGUF: {exc}") from None
    stamp.write_text(digest + "\n")
    return target


def base_identity(path: Path) -> str:
    """A key for caches of the base model's outputs: its config, tokenizer and weight files (name, size, head)."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".jinja")):
            h.update(f.name.encode() + str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()


@dataclass(frozen=True)
class Encoded:
    ids: list[int]  # prompt + decision token + answer, minus the last target
    first_target: int  # position whose next token is the decision token
    targets: list[int]  # decision token, answer tokens (+ end of turn when the answer was not cut)
    learns_decision: bool = True  # False: the decision token is teacher-forced input only (what follows it is taught)

    def decision_alone(self) -> "Encoded":
        """The same example teaching its decision token and nothing after it (its prompt, one target)."""
        return Encoded(self.ids[: self.first_target + 1], self.first_target, self.targets[:1], self.learns_decision)


class Encoder:
    """Chat-template rendering and tokenization, token for token as the runtime does it (llama.cpp):

    - the user's text is tokenized on its own with special tokens split, so a prompt that spells ``[refuse]`` or
      ``<|im_end|>`` gets plain text tokens;
    - template text is cut at added tokens and every piece of text between them tokenized on its own: llama.cpp's
      SentencePiece tokenizer (``add_space_prefix``, Llama-2/Phi-3) gives each such piece a leading space, which a
      tokenizer.json that prepends "▁" only once (Metaspace ``prepend_scheme: first``) would not; byte-level BPE
      and Gemma (no prefix) tokenize the same either way;
    - BOS first when the tokenizer adds one and the template has not written it (the runtime's rule)."""

    def __init__(self, tok, max_prompt: int, max_answer: int):
        self.tok, self.max_prompt, self.max_answer = tok, max_prompt, max_answer
        text = tok.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                       add_generation_prompt=True)
        if text.count(SENTINEL) != 1:
            raise TrainError("the chat template does not place the user's message once: cannot render prompts")
        added = sorted({t.content for t in tok.added_tokens_decoder.values() if t.content}, key=len, reverse=True)
        self._added = re.compile("(" + "|".join(map(re.escape, added)) + ")") if added else None
        before, after = text.split(SENTINEL)
        self.before, self.after = self._template_ids(before), self._template_ids(after)
        bos = tok.bos_token_id
        adds_bos = bos is not None and tok("a", add_special_tokens=True)["input_ids"][:1] == [bos]
        self._bos = [bos] if adds_bos else []  # the runtime's rule: BOS first when the template has not written it
        if self._bos and self.before[:1] != self._bos:
            self.before = self._bos + self.before

    def _template_ids(self, text: str) -> list[int]:
        pieces = self._added.split(text) if self._added else [text]
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2:  # an added token (the split pattern's group)
                ids.append(self.tok.convert_tokens_to_ids(piece))
            elif piece:
                ids += self._ids(piece, special=False)
        return ids

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def prompt(self, user: str, where: str = "") -> list[int]:
        ids = self.before + self._ids(user, special=False) + self.after
        if len(ids) > self.max_prompt:
            raise TrainError(f"{where}: the prompt is {len(ids)} tokens in the chat template, over "
                             f"--max-prompt-tokens {self.max_prompt} (raise it or drop the row)")
        return ids

    def cut(self, user: str, max_tokens: int) -> str:
        """The user's text cut to its first ``max_tokens`` tokens (unchanged when shorter)."""
        ids = self._ids(user, special=False)
        return user if len(ids) <= max_tokens else self.tok.decode(ids[:max_tokens])

    def conversation(self, turns: Sequence[Turn], where: str = "") -> list[int]:
        """The prompt of a chat whose earlier turns are given, ending in the assistant's generation prompt. An
        assistant turn's decision token stands first in its content, as the runtime re-inserts it
        (``template.ChatTemplate.render``); every text is tokenized apart from the template's."""
        marks = [f"\x00TURN{k}\x00" for k in range(len(turns))]
        text = self.tok.apply_chat_template([{"role": t.role, "content": m} for t, m in zip(turns, marks)],
                                            tokenize=False, add_generation_prompt=True)
        ids: list[int] = []
        for k, (turn, mark) in enumerate(zip(turns, marks)):
            if text.count(mark) != 1:
                raise TrainError(f"{where}: the chat template does not place turn {k} once")
            before, text = text.split(mark)
            ids += self._template_ids(before) + ([turn.decision_id] if turn.decision_id is not None else [])
            ids += self._ids(turn.content, special=False)
        ids += self._template_ids(text)
        if self._bos and ids[:1] != self._bos:
            ids = self._bos + ids
        if len(ids) > self.max_prompt:
            raise TrainError(f"{where}: the conversation is {len(ids)} tokens, over --max-prompt-tokens "
                             f"{self.max_prompt}")
        return ids

    def example(self, user: str | Sequence[Turn], decision_id: int, answer: str | None, where: str = "",
                learns_decision: bool = True) -> Encoded:
        """``user``: the one user message, or a whole conversation ending in a user turn. ``answer`` None teaches
        the decision token alone (no answer text to imitate)."""
        prompt = self.prompt(user, where) if isinstance(user, str) else self.conversation(user, where)
        if answer is None:
            return Encoded(prompt, len(prompt) - 1, [decision_id], learns_decision)
        body = self._ids(answer, special=False)
        body = body[: self.max_answer] if len(body) >= self.max_answer else body + [self.tok.eos_token_id]
        targets = [decision_id] + body
        return Encoded(prompt + targets[:-1], len(prompt) - 1, targets, learns_decision)


@dataclass(frozen=True)
class Turn:
    """One earlier turn of a conversation to train on (``decision_id``: an assistant turn's decision token)."""

    role: str
    content: str
    decision_id: int | None = None


def add_decision_tokens(tok, tokens: Sequence[str]) -> list[int]:
    """Ids of the decision tokens, added as special tokens where the tokenizer lacks them."""
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    ids = [tok.convert_tokens_to_ids(t) for t in tokens]
    for t, i in zip(tokens, ids):
        if tok(t, add_special_tokens=False)["input_ids"] != [i]:
            raise TrainError(f"{t!r} does not tokenize to its own single token in this tokenizer")
    return ids


class DecisionRows(nn.Module):
    """The decision tokens' input rows and output rows (one tensor when the embeddings are tied)."""

    def __init__(self, model, ids: Sequence[int], init_in: torch.Tensor, init_out: torch.Tensor):
        super().__init__()
        self.register_buffer("ids", torch.tensor(list(ids)), persistent=False)
        self.tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        self.input = nn.Parameter(init_in.clone())
        self.output = None if self.tied else nn.Parameter(init_out.clone())
        self.lookup = torch.full((model.get_input_embeddings().weight.shape[0],), -1, dtype=torch.long)
        self.lookup[self.ids] = torch.arange(len(ids))

    def out_rows(self) -> torch.Tensor:
        return self.input if self.tied else self.output

    def embed_hook(self, module, args, output):
        ids = args[0]
        k = self.lookup.to(ids.device)[ids]
        mask = (k >= 0).unsqueeze(-1)
        rows = self.input.to(output.dtype)[k.clamp(min=0)]
        scale = getattr(module, "embed_scale", None)  # Gemma scales every embedding by sqrt(hidden_size)
        return torch.where(mask, rows if scale is None else rows * scale.to(output.dtype), output)

    def head_hook(self, module, args, output):
        hidden = args[0]
        logits = output.clone()
        logits[..., self.ids] = hidden @ self.out_rows().to(hidden.dtype).T
        return logits

    def attach(self, model) -> None:
        model.get_input_embeddings().register_forward_hook(self.embed_hook)
        model.get_output_embeddings().register_forward_hook(self.head_hook)


def init_rows(weight: torch.Tensor, tok, tokens: Sequence[str]) -> torch.Tensor:
    """Each new row starts at the mean row of the words in its name (as the default recipe does): distinct, and
    near related vocabulary. For the input embedding and, when untied, the output matrix alike."""
    rows = []
    for text in tokens:
        pieces = tok(text.strip("[]"), add_special_tokens=False)["input_ids"]
        rows.append(weight.detach()[pieces].float().mean(0))
    return torch.stack(rows)


def trainable(model, tok, tokens: Sequence[str], rank: int, seed: int):
    """(peft model, DecisionRows, decision token ids): LoRA (no dropout: a resumed run repeats an uninterrupted one
    exactly) on every linear map but the output matrix, base weights frozen."""
    from peft import LoraConfig, get_peft_model

    ids = add_decision_tokens(tok, tokens)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    init_in = init_rows(model.get_input_embeddings().weight, tok, tokens)
    init_out = init_rows(model.get_output_embeddings().weight, tok, tokens)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", bias="none")
    peft_model = get_peft_model(model, config)
    rows = DecisionRows(model, ids, init_in, init_out)
    rows.attach(model)
    return peft_model, rows, ids


def merged(peft_model, rows: DecisionRows, tok, out: Path) -> Path:
    """The merged checkpoint (LoRA folded in, decision rows written) with its tokenizer, in safetensors."""
    model = peft_model.merge_and_unload()
    with torch.no_grad():
        model.get_input_embeddings().weight[rows.ids] = rows.input.to(model.dtype)
        if not rows.tied:
            model.get_output_embeddings().weight[rows.ids] = rows.output.to(model.dtype)
    for hook_owner in (model.get_input_embeddings(), model.get_output_embeddings()):
        hook_owner._forward_hooks.clear()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    _check_saved(out)
    return out


def _check_saved(out: Path) -> None:
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if not config.get("architectures"):
        raise TrainError(f"{out}: the merged checkpoint has no architecture in config.json")
