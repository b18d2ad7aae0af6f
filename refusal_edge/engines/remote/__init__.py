"""Remote engines: the same refusal dial on a model served by llama.cpp's llama-server or vLLM.

``RefusalModel.connect(url, gguf)`` (or ``--engine URL`` on the CLI) is the way in; ``engine.py`` holds the
engine, whose tokenizer member is a vocabulary-only load of the served model (``llama/vocab.py``) from the source
``tokenizer_source.py`` finds (a GGUF or a checkpoint directory); ``dialect.py`` declares what a wire format
provides, ``llama_server.py`` and ``vllm.py`` are the two, ``firsttoken.py`` the arithmetic that turns
reported log-probabilities into first-token scores.
"""

from .engine import RemoteEngine, connect
from .errors import EngineError

__all__ = ["RemoteEngine", "connect", "EngineError"]
