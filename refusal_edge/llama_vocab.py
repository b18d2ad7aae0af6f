"""A GGUF's vocabulary through llama.cpp: loading llama.cpp quietly, the tokenizer side of the seam (``LlamaTokenizer``)
and a vocabulary-only load for engines that run the model elsewhere. Part of the in-process llama.cpp engine, with
``backend.py``: the only two modules that import llama_cpp."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from pathlib import Path

from .engine import Tokenizer
from .errors import ModelLoadError
from .text import clean

GGUF_MAGIC = b"GGUF"


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - the package is a core dependency
        raise ModelLoadError(f"llama-cpp-python is not importable: {exc}") from None
    return llama_cpp


_silent_log = None


def set_verbose(verbose: bool) -> None:
    """llama.cpp logs load details to stderr; users see them only when they ask.

    llama-cpp-python's own callback maps ggml's newer log levels one step off and so prints warnings even when
    quiet; when not verbose, a callback that drops everything is installed instead (errors surface as exceptions).
    """
    global _silent_log
    lc = _llama_cpp()
    from llama_cpp import _logger

    _logger.set_verbose(verbose)
    if verbose:
        lc.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        return
    if _silent_log is None:
        _silent_log = lc.llama_log_callback(lambda level, text, user_data: None)
    lc.llama_log_set(_silent_log, ctypes.c_void_p(0))


class LlamaTokenizer(Tokenizer):
    """The vocabulary of a loaded ``Llama`` (which may be a vocabulary-only load, see ``load_tokenizer``)."""

    def __init__(self, llm, path: Path) -> None:
        lc = _llama_cpp()
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


def llama_build() -> tuple[str, str]:
    """llama-cpp-python's version and llama.cpp's system info (its backends and their compiled-in features)."""
    lc = _llama_cpp()
    info = lc.llama_print_system_info()
    return str(lc.__version__), (info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)).strip()


def load_llama(path: Path, verbose: bool = False, repack: str | None = None, **kwargs):
    """A ``llama_cpp.Llama`` with the CPU kernels ``kernels.choose`` picks for this machine (``repack``: "auto",
    "on", "off"; default $REFUSAL_EDGE_REPACK, else auto). Every weight-loading path goes through here."""
    check_gguf_file(path)
    _llama_cpp()
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


_load_llama = load_llama
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
    return LlamaTokenizer(_load_llama(path, verbose, vocab_only=True), path)


def check_gguf_file(path: Path) -> None:
    """Fail early and plainly on what llama.cpp would report obscurely (or crash on)."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        hint = (" (a Hugging Face checkpoint: convert it with `refusal-edge convert`, or run it on an engine with "
                "--engine URL)" if (path / "config.json").is_file() else "")
        raise ModelLoadError(f"model path is not a file: {path}{hint}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})")
