"""What goes wrong with a remote engine, as one-line errors the CLI prints without a traceback."""

from ...errors import ModelLoadError


class EngineError(ModelLoadError):
    """The engine is unreachable, timed out, failed (HTTP 5xx), answered nonsense, or serves another model.

    A ModelLoadError: to the server and the CLI it is the model failing, not the caller's mistake."""
