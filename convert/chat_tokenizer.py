"""Prompt token ids exactly as the runtime builds them, for training and distillation on the workstation.

The runtime (``RefusalModel.prompt_tokens``) renders the GGUF's chat template with message text kept apart,
tokenizing template parts with special tokens allowed and message text without. Training must see the very
same ids, or the first-token decision is learned at a position the runtime never produces: so this is the
runtime's own vocabulary (a vocabulary-only load) and prompt building (``template.prompt_token_ids``).
"""

from __future__ import annotations

from pathlib import Path

from refusal_edge.engines.llama.vocab import load_tokenizer
from refusal_edge.template import prompt_token_ids, template_of


class ChatTokenizer:
    def __init__(self, gguf_path: str | Path) -> None:
        self.vocabulary = load_tokenizer(gguf_path)
        self.bos, self.eos, self.add_bos = self.vocabulary.bos, self.vocabulary.eos, self.vocabulary.add_bos
        self.template = template_of(self.vocabulary)

    def piece(self, token: int) -> bytes:
        return self.vocabulary.piece(token)

    def text(self, text: str) -> list[int]:
        """Plain text: never special tokens, whatever it contains."""
        return self.vocabulary.tokenize(text, special=False) if text else []

    def prompt(self, user: str) -> list[int]:
        return prompt_token_ids(self.vocabulary, self.template, [{"role": "user", "content": user}])

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")
