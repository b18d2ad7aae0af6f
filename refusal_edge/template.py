"""Chat-template rendering that keeps message text apart from template text.

The template is rendered with each message's content replaced by a sentinel; the result is split at the
sentinels so that template parts can be tokenized with ``special=True`` and content with ``special=False``.
Nothing a user or a document supplies can therefore become a control token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import RefusalEdgeError

# Private-use code points: no tokenizer merges them with neighbours and no template edits them.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

# Used only when a GGUF carries no template; most small chat models speak ChatML.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Segment:
    text: str
    special: bool  # True: template text, control tokens allowed


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise RefusalEdgeError(f"the model's chat template does not parse: {exc}") from None
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[Mapping], add_generation_prompt: bool = True) -> list[Segment]:
        """Segments of the prompt. An assistant message's ``refusal_token`` (the decision of that turn) is
        re-inserted as template text at the start of its content, as the model saw it in training."""
        pieces: list[Segment] = []
        masked = []
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str):
                raise RefusalEdgeError(f"message content must be a string, got {type(content).__name__}")
            role = message.get("role")
            if not isinstance(role, str):
                raise RefusalEdgeError("every message needs a 'role' string")
            marker = ""
            if message.get("refusal_token"):
                marker += _mark(len(pieces))
                pieces.append(Segment(message["refusal_token"], True))
            marker += _mark(len(pieces))
            pieces.append(Segment(content, False))
            masked.append({**message, "content": marker})
        try:
            rendered = self._template.render(
                messages=masked, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise RefusalEdgeError(f"the model's chat template failed on these messages: {exc}") from None
        segments: list[Segment] = []
        pos = 0
        for match in _SENTINEL.finditer(rendered):
            if match.start() > pos:
                segments.append(Segment(rendered[pos:match.start()], True))
            segments.append(pieces[int(match.group(1))])
            pos = match.end()
        if pos < len(rendered):
            segments.append(Segment(rendered[pos:], True))
        return [s for s in segments if s.text]


def _mark(index: int) -> str:
    return f"{_OPEN}{index}{_CLOSE}"


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)
