"""llama-cpp-python, imported in one place: the module itself, its logging made quiet, and the build's facts.
Part of the in-process llama.cpp engine; the kernel choice (``kernels.py``) reads the build from here."""

from __future__ import annotations

import ctypes

from ...errors import ModelLoadError


def llama_cpp_module():
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
    lc = llama_cpp_module()
    from llama_cpp import _logger

    _logger.set_verbose(verbose)
    if verbose:
        lc.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        return
    if _silent_log is None:
        _silent_log = lc.llama_log_callback(lambda level, text, user_data: None)
    lc.llama_log_set(_silent_log, ctypes.c_void_p(0))


def llama_build() -> tuple[str, str]:
    """llama-cpp-python's version and llama.cpp's system info (its backends and their compiled-in features)."""
    lc = llama_cpp_module()
    info = lc.llama_print_system_info()
    return str(lc.__version__), (info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)).strip()
