"""The GGUF refusal-metadata contract, shared by the converter and the runtime.

llama.cpp's metadata API stringifies scalars and drops arrays, so everything structured lives in one
JSON string under ``refusal.spec``; ``refusal.schema_version`` is a plain integer beside it so that
tools can tell the schema without parsing JSON. This module imports neither llama.cpp nor gguf:
both sides hand it plain token texts and types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from .errors import MetadataError

SCHEMA_VERSION = 1
KEY_SPEC = "refusal.spec"
KEY_SCHEMA_VERSION = "refusal.schema_version"

RESPOND_TOKEN = "[respond]"
REFUSE_TOKEN = "[refuse]"
BINARY_CATEGORY = "refuse"
CATEGORIES = (
    "Humanizing requests",
    "Incomplete requests",
    "Indeterminate requests",
    "Requests with safety concerns",
    "Unsupported requests",
)

# llama.cpp's llama_token_type values (gguf.TokenType mirrors them).
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# How tokenizers spell a leading space inside a vocabulary entry: none, literal, byte-level BPE, SentencePiece.
_SPACE_PREFIXES = ("", " ", "\u0120", "\u2581")


def category_token(name: str) -> str:
    return f"[{name}]"


def short_name(category: str) -> str:
    """'Requests with safety concerns' -> 'safety', 'Humanizing requests' -> 'humanizing': for tables and lines."""
    words = [w for w in category.lower().split() if w not in ("requests", "with", "concerns")]
    return words[0] if words else category.lower()


def short_names(categories: Iterable[str]) -> dict[str, str]:
    """The one short name of each of a model's categories, as the CLI's decision lines and the dials page show
    them: ``short_name``, or the whole name in lower case where two categories would share a short name (a short
    name must still say which category it is, and ``resolve_category`` accepts both forms)."""
    names = list(categories)
    shorts = [short_name(name) for name in names]
    return {name: short if shorts.count(short) == 1 else name.lower() for name, short in zip(names, shorts)}


@dataclass(frozen=True)
class TokenRef:
    name: str
    token: str
    id: int


@dataclass(frozen=True)
class RefusalSpec:
    """Which vocabulary entries carry the decision. A binary model has one category, ``refuse``."""

    respond: TokenRef
    categories: tuple[TokenRef, ...]
    default_policy: Mapping | None = None
    schema_version: int = SCHEMA_VERSION
    category_names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.categories:
            raise MetadataError("refusal metadata lists no refusal category")
        names = tuple(c.name for c in self.categories)
        if len(set(names)) != len(names):
            raise MetadataError(f"refusal metadata repeats a category name: {list(names)}")
        ids = [self.respond.id, *(c.id for c in self.categories)]
        if len(set(ids)) != len(ids):
            raise MetadataError(f"refusal metadata maps two decisions to one token id: {ids}")
        object.__setattr__(self, "category_names", names)

    @property
    def is_binary(self) -> bool:
        return self.category_names == (BINARY_CATEGORY,)

    @property
    def refs(self) -> tuple[TokenRef, ...]:
        """Respond first, then categories in order: the layout of every probability vector."""
        return (self.respond, *self.categories)

    @property
    def decision_tokens(self) -> frozenset[str]:
        """The texts of every decision token: what a caller's echoed assistant turn may start with."""
        return frozenset(ref.token for ref in self.refs)

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(ref.id for ref in self.refs)

    def category_of(self, token_id: int) -> str | None:
        for c in self.categories:
            if c.id == token_id:
                return c.name
        return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema_version": self.schema_version,
                "respond": {"token": self.respond.token, "id": self.respond.id},
                "categories": [{"name": c.name, "token": c.token, "id": c.id} for c in self.categories],
                "default_policy": dict(self.default_policy) if self.default_policy else None,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    def gguf_fields(self) -> dict[str, object]:
        return {KEY_SCHEMA_VERSION: self.schema_version, KEY_SPEC: self.to_json()}

    def write_gguf_fields(self, writer) -> None:
        """Add the fields to a ``gguf.GGUFWriter`` (passed in: this module does not import gguf)."""
        for key, value in self.gguf_fields().items():
            (writer.add_uint32 if isinstance(value, int) else writer.add_string)(key, value)

    def with_default_policy(self, policy: Mapping | None) -> "RefusalSpec":
        return RefusalSpec(self.respond, self.categories, policy, self.schema_version)

    @classmethod
    def from_json(cls, text: str) -> "RefusalSpec":
        try:
            raw = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise MetadataError(f"{KEY_SPEC} is not valid JSON: {exc}") from None
        except RecursionError:
            raise MetadataError(f"{KEY_SPEC} is nested too deeply to be a refusal spec") from None
        if not isinstance(raw, dict):
            raise MetadataError(f"{KEY_SPEC} must be a JSON object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise MetadataError(
                f"{KEY_SPEC}: schema_version {version!r} is not supported (this runtime reads {SCHEMA_VERSION})"
            )
        respond = _token_ref(raw.get("respond"), "respond", default_name="respond")
        cats = raw.get("categories")
        if not isinstance(cats, list):
            raise MetadataError(f"{KEY_SPEC}: 'categories' must be a list")
        categories = tuple(_token_ref(c, f"categories[{i}]") for i, c in enumerate(cats))
        policy = raw.get("default_policy")
        if policy is not None and not isinstance(policy, dict):
            raise MetadataError(f"{KEY_SPEC}: 'default_policy' must be an object or null")
        return cls(respond, categories, policy, version)

    @classmethod
    def from_gguf_fields(cls, fields: Mapping[str, object]) -> "RefusalSpec | None":
        """None when the file carries no refusal metadata at all."""
        text = fields.get(KEY_SPEC)
        if text is None:
            return None
        return cls.from_json(text if isinstance(text, str) else bytes(text).decode("utf-8"))

    def check_against(self, text_of: Callable[[int], str], is_control: Callable[[int], bool], n_vocab: int) -> None:
        """Every id must exist, hold the recorded text, and be CONTROL so user text can never produce it."""
        for ref in self.refs:
            if not 0 <= ref.id < n_vocab:
                raise MetadataError(f"refusal token {ref.token!r} has id {ref.id}, outside the vocabulary (size {n_vocab})")
            actual = text_of(ref.id)
            if actual != ref.token:
                raise MetadataError(
                    f"refusal token {ref.token!r} is recorded at id {ref.id}, but the vocabulary holds {actual!r} there"
                )
            if not is_control(ref.id):
                raise MetadataError(
                    f"refusal token {ref.token!r} (id {ref.id}) is not a CONTROL token, so user text could produce "
                    "it; re-export the model with `refusal-edge annotate`"
                )


def _token_ref(raw: object, where: str, default_name: str | None = None) -> TokenRef:
    if not isinstance(raw, dict):
        raise MetadataError(f"{KEY_SPEC}: '{where}' must be an object")
    name = raw.get("name", default_name)
    token, token_id = raw.get("token"), raw.get("id")
    if not isinstance(name, str) or not name:
        raise MetadataError(f"{KEY_SPEC}: '{where}.name' must be a non-empty string")
    if not isinstance(token, str) or not token:
        raise MetadataError(f"{KEY_SPEC}: '{where}.token' must be a non-empty string")
    if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
        raise MetadataError(f"{KEY_SPEC}: '{where}.id' must be a non-negative integer")
    return TokenRef(name, token, token_id)


def find_token(index: Mapping[str, int], text: str) -> tuple[str, int] | None:
    """Look a paper token up in a vocabulary index, tolerating a leading-space marker."""
    for prefix in _SPACE_PREFIXES:
        spelled = prefix + text
        if spelled in index:
            return spelled, index[spelled]
    return None


def discover(vocabulary: Iterable[str] | Mapping[str, int]) -> RefusalSpec | None:
    """Recognise the paper's token strings in a vocabulary: the five categories or ``[refuse]``, plus ``[respond]``.

    Category tokens win over ``[refuse]`` when a vocabulary has both. Returns None when neither set is complete.
    """
    index = vocabulary if isinstance(vocabulary, Mapping) else {t: i for i, t in enumerate(vocabulary)}
    respond = find_token(index, RESPOND_TOKEN)
    if respond is None:
        return None
    found = [find_token(index, category_token(name)) for name in CATEGORIES]
    if all(found):
        categories = tuple(TokenRef(n, f[0], f[1]) for n, f in zip(CATEGORIES, found))
    else:
        refuse = find_token(index, REFUSE_TOKEN)
        if refuse is None:
            return None
        categories = (TokenRef(BINARY_CATEGORY, *refuse),)
    return RefusalSpec(TokenRef("respond", *respond), categories)


def spec_from_tokens(
    vocabulary: Sequence[str], respond: str, categories: Mapping[str, str], default_policy: Mapping | None = None
) -> RefusalSpec:
    """Build a spec from explicit token texts (the converter's ``--category NAME=TOKEN``), each a single entry."""
    index = {t: i for i, t in enumerate(vocabulary)}

    def ref(name: str, text: str) -> TokenRef:
        hit = find_token(index, text)
        if hit is None:
            raise MetadataError(f"token {text!r} (for {name}) is not a single entry of the vocabulary")
        return TokenRef(name, *hit)

    return RefusalSpec(ref("respond", respond), tuple(ref(n, t) for n, t in categories.items()), default_policy)


def read_spec(tokenizer) -> RefusalSpec:
    """The refusal spec of a model's vocabulary (an engine.Tokenizer): its metadata, else its tokens, checked."""
    raw = tokenizer.metadata.get(KEY_SPEC)
    spec = RefusalSpec.from_json(raw) if raw else discover(tokenizer.vocabulary())
    if spec is None:
        raise MetadataError(
            "not a refusal-token model: the GGUF has no refusal metadata (refusal.spec) and its vocabulary lacks the "
            "paper's tokens ([respond] with [refuse] or the five category tokens). Convert a refusal-token checkpoint "
            "with `refusal-edge convert`, or add metadata with `refusal-edge annotate`"
        )
    spec.check_against(tokenizer.token_text, tokenizer.is_control, tokenizer.n_vocab)
    return spec
