"""Prompt token ids exactly as the runtime builds them, for training and distillation on the workstation.

The runtime (``RefusalModel.prompt_tokens``) renders the GGUF's chat template with message text kept apart,
tokenizing template parts with special tokens allowed and message text without. Training must see the very
same ids, or the first-token decision is learned at a position the runtime never produces.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import llama_cpp
from llama_cpp import Llama

from refusal_edge.template import CHATML_TEMPLATE, ChatTemplate


class ChatTokenizer:
    def __init__(self, gguf_path: str | Path) -> None:
        reader = gguf.GGUFReader(str(gguf_path))
        field = reader.fields.get("tokenizer.chat_template")
        source = field.contents() if field is not None else CHATML_TEMPLATE
        self._llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm._model.model)
        self.bos, self.eos = self._llm.token_bos(), self._llm.token_eos()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.template = ChatTemplate(source, self.piece(self.bos, special=True).decode(),
                                     self.piece(self.eos, special=True).decode())

    def piece(self, token: int, special: bool = False) -> bytes:
        """A token's bytes via llama_token_to_piece (``detokenize`` silently drops pieces over 32 bytes)."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def text(self, text: str) -> list[int]:
        """Plain text: never special tokens, whatever it contains."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def prompt(self, user: str) -> list[int]:
        tokens: list[int] = []
        for segment in self.template.render([{"role": "user", "content": user}]):
            tokens += self._llm.tokenize(segment.text.encode("utf-8"), add_bos=False, special=segment.special)
        if self.add_bos and self.bos >= 0 and (not tokens or tokens[0] != self.bos):
            tokens.insert(0, self.bos)
        return tokens

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")
