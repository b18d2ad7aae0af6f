"""Chat-template rendering that keeps message text apart from template text.

The template is rendered with every caller-supplied string (content, name, any other field) replaced by a
sentinel; the result is split at the sentinels so that template parts can be tokenized with ``special=True``
and caller text with ``special=False``. Roles are the one exception: templates branch on them, so they are
passed through, but only from the ``ROLES`` whitelist. Nothing a user or a document supplies can therefore
become a control token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import RefusalEdgeError

# Private-use code points: no tokenizer merges them with neighbours and no template edits them.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
ROLES = ("system", "user", "assistant")

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

    def render(self, messages: Sequence[Mapping], add_generation_prompt: bool = True,
               decision_tokens: Collection[str] = ()) -> list[Segment]:
        """Segments of the prompt. An assistant message's ``refusal_token`` (the decision of that turn) is
        re-inserted as template text at the start of its content, as the model saw it in training; it must be
        one of ``decision_tokens``."""
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise RefusalEdgeError("messages must be a list of {role, content} objects")
        pieces: list[Segment] = []
        masked = [self._mask(i, message, pieces, decision_tokens) for i, message in enumerate(messages)]
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
            index = int(match.group(1))
            if index >= len(pieces):  # the template's own text looks like a sentinel: keep it as text
                continue
            if match.start() > pos:
                segments.append(Segment(rendered[pos:match.start()], True))
            segments.append(pieces[index])
            pos = match.end()
        if pos < len(rendered):
            segments.append(Segment(rendered[pos:], True))
        return [s for s in segments if s.text]

    @staticmethod
    def _mask(i: int, message: object, pieces: list[Segment], decision_tokens: Collection[str]) -> dict:
        """The message as the template sees it: each caller string becomes a sentinel for a ``special=False`` piece."""
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise RefusalEdgeError(f"{where} must be an object with 'role' and 'content'")
        role, content, marker = message.get("role"), message.get("content"), message.get("refusal_token")
        if not isinstance(role, str) or role not in ROLES:
            raise RefusalEdgeError(f"{where}.role {role!r} is not supported; use {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise RefusalEdgeError(f"{where}.content must be a string, got {type(content).__name__}")
        head = ""
        if marker is not None and marker != "":
            if not isinstance(marker, str) or marker not in decision_tokens:
                # It is rendered as template text, so anything else would be a control-token injection.
                raise RefusalEdgeError(f"{where}.refusal_token {marker!r} is not one of this model's decision tokens")
            head = _mark(len(pieces))
            pieces.append(Segment(marker, True))
        masked = {"role": role, "content": head + _piece(content, pieces)}
        for key, value in message.items():
            # A template reaches a field by its name; other keys (and None) cannot carry text into it.
            if not isinstance(key, str) or not key.isidentifier() or key in masked or key == "refusal_token" \
                    or value is None:
                continue
            if isinstance(value, str):
                masked[key] = _piece(value, pieces)
            elif isinstance(value, (int, float)):  # bool included: digits and words, no caller text
                masked[key] = value
            else:
                raise RefusalEdgeError(f"{where}.{key} must be a string or a number, got {type(value).__name__}")
        return masked


def template_of(tokenizer) -> ChatTemplate:
    """The chat template a model's vocabulary carries (ChatML when it has none), with its BOS/EOS texts."""
    source = tokenizer.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
    return ChatTemplate(source, tokenizer.token_text(tokenizer.bos), tokenizer.token_text(tokenizer.eos))


def prompt_token_ids(tokenizer, template: ChatTemplate, messages: Sequence[Mapping],
                     decision_tokens: Collection[str] = ()) -> list[int]:
    """A conversation's prompt ids: template parts may hold control tokens, message content never does; BOS first
    when the vocabulary asks for it. The runtime and the converter's training build prompts only through here."""
    tokens: list[int] = []
    for segment in template.render(messages, decision_tokens=decision_tokens):
        tokens += tokenizer.tokenize(segment.text, special=segment.special)
    bos = tokenizer.bos
    if tokenizer.add_bos and bos >= 0 and (not tokens or tokens[0] != bos):
        tokens.insert(0, bos)
    return tokens


def _piece(text: str, pieces: list[Segment]) -> str:
    pieces.append(Segment(text, False))
    return _mark(len(pieces) - 1)


def _mark(index: int) -> str:
    return f"{_OPEN}{index}{_CLOSE}"


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)
