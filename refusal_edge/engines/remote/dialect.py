"""What a remote engine's wire format provides (``Dialect``): llama-server's (llama_server.py) and vLLM's (vllm.py)
implement it, and ``RemoteEngine`` uses nothing else, so a new remote engine is one more dialect module."""

from __future__ import annotations

from typing import Iterator, Mapping, Protocol, Sequence

from ...engine import Scored
from ...metadata import RefusalSpec
from .http import HttpClient


class Dialect(Protocol):
    kind: str  # "llama-server", "vllm": names the engine in identities and messages
    http: HttpClient
    model_id: str  # the served model's name at the engine
    n_ctx: int  # its context length (0: not said)
    n_vocab: int | None  # its vocabulary size, where it says
    slots: int | None  # requests it serves at once, where it says

    def tokenize(self, text: str, special: bool) -> list[int]: ...

    def probe(self, tokens: Sequence[int], spec: RefusalSpec) -> None:
        """At connect, after the same-model checks: find out what this engine supports (``tokens``: a probe text's
        ids)."""

    def score(self, tokens: Sequence[int], spec: RefusalSpec, temperature: float) -> Scored: ...

    def sample_first(self, tokens: Sequence[int], params, bias: Mapping[int, float]) -> int: ...

    def stream(self, tokens: Sequence[int], params, n_predict: int, n_ctx: int) -> Iterator[int]: ...
