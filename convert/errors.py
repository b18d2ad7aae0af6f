"""Conversion failures: each names the file or token at fault and, where there is one, the way out."""

from refusal_edge.errors import RefusalEdgeError


class ConversionError(RefusalEdgeError):
    """The source, the requested output or the conversion itself cannot go on; the message says why."""
