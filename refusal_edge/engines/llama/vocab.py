"""A GGUF's vocabulary through llama.cpp: loading a model with this machine's kernels, the tokenizer side of the seam
(``LlamaTokenizer``: the ``tokenizer`` member of ``LlamaEngine``, and of a remote engine) and a vocabulary-only load
for engines that run the model elsewhere. Part of the in-process llama.cpp engine."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from pathlib import Path

from ...engine import Tokenizer
from ...errors import ModelLoadError
from ...gguf_header import check_gguf_file
from .lib import llama_cpp_module, set_verbose
from ...text import clean


class LlamaTokenizer(Tokenizer):
    """The vocabulary of a loaded ``Llama`` (which may be a vocabulary-only load, see ``load_tokenizer``)."""

    def __init__(self, llm, path: Path) -> None:
        lc = llama_cpp_module()
        self._lc, self._llm = lc, llm
        self.path = path
        self.name = path.stem
        self._vocab = lc.llama_model_get_vocab(llm._model.model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self.metadata: dict[str, str] = dict(llm.metadata)
        self._buffers = threading.local()  # piece() is called from several threads on a remote engine's vocabulary

    def token_text(self, token: int) -> str:
        return self._lc.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    def is_control(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_get_attr(self._vocab, token) & self._lc.LLAMA_TOKEN_ATTR_CONTROL)

    def is_eog(self, token: int) -> bool:
        return bool(self._lc.llama_vocab_is_eog(self._vocab, token))

    @property
    def bos(self) -> int:
        return int(self._lc.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        return int(self._lc.llama_vocab_eos(self._vocab))

    @property
    def add_bos(self) -> bool:
        return bool(self._lc.llama_vocab_get_add_bos(self._vocab))

    def tokenize(self, text: str, special: bool) -> list[int]:
        if not text:
            return []
        # Every text reaches the model through here: a lone surrogate becomes U+FFFD instead of an encode error.
        return self._llm.tokenize(clean(text).encode("utf-8"), add_bos=False, special=special)

    def piece(self, token: int) -> bytes:
        """Bytes a token contributes to output text; CONTROL tokens contribute none."""
        buf = getattr(self._buffers, "piece", None)
        if buf is None:
            self._buffers.piece = buf = ctypes.create_string_buffer(256)
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            self._buffers.piece = buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()


def load_llama(path: Path, verbose: bool = False, repack: str | None = None, **kwargs):
    """A ``llama_cpp.Llama`` with the CPU kernels ``kernels.choose`` picks for this machine (``repack``: "auto",
    "on", "off"; default $REFUSAL_EDGE_REPACK, else auto). Every weight-loading path goes through here."""
    check_gguf_file(path)
    llama_cpp_module()
    from llama_cpp import Llama

    use_extra_bufts = True
    if not kwargs.get("vocab_only"):
        from .kernels import choose

        use_extra_bufts = choose(repack).use_extra_bufts
    set_verbose(verbose)
    try:
        with _model_params(use_extra_bufts=use_extra_bufts):
            return Llama(model_path=str(path), verbose=verbose, **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {path}: {exc} (is the file complete, and an architecture this "
            "llama.cpp build supports?)"
        ) from None

_params_lock = threading.Lock()


@contextlib.contextmanager
def _model_params(**fields):
    """``Llama(...)`` takes no argument for some ``llama_model_params`` fields (``use_extra_bufts``) and loads the
    model inside its constructor from ``llama_model_default_params()``: for the duration of one construction that
    function returns the defaults with ``fields`` set. Serialised, so concurrent loads cannot see each other's."""
    from llama_cpp import llama_cpp as bindings

    defaults = bindings.llama_model_default_params
    changed = {k: v for k, v in fields.items() if getattr(defaults(), k) != v}
    if not changed:
        yield
        return

    def patched():
        params = defaults()
        for name, value in changed.items():
            setattr(params, name, value)
        return params

    with _params_lock:
        bindings.llama_model_default_params = patched
        try:
            yield
        finally:
            bindings.llama_model_default_params = defaults


def load_tokenizer(path: str | os.PathLike, verbose: bool = False) -> LlamaTokenizer:
    """A GGUF's vocabulary without its weights: for engines that run the model elsewhere."""
    path = Path(path)
    return LlamaTokenizer(load_llama(path, verbose, vocab_only=True), path)
