"""Remote engines: the same refusal dial on a model served by llama.cpp's llama-server or vLLM.

``RefusalModel.connect(url, gguf)`` (or ``--engine URL`` on the CLI) is the way in; ``engine.py`` holds the
engine, ``tokenizer_source.py`` reads the vocabulary of a GGUF or a checkpoint directory, ``llama_server.py`` and
``vllm.py`` the two wire formats, ``firsttoken.py`` the arithmetic that turns
reported log-probabilities into first-token scores.
"""

from .engine import RemoteEngine, connect
from .errors import EngineError

__all__ = ["RemoteEngine", "connect", "EngineError"]
