"""Training failures: each names the file, row or option at fault."""

from ..errors import ConversionError


class TrainError(ConversionError):
    """Bad training input (data, checkpoint, options) or a step that cannot go on; the message says why."""
