"""The in-process llama.cpp engine, the only code that imports llama-cpp-python (``tests/test_engine.py`` checks it).

``engine.py`` holds the engine (``LlamaEngine``: prefix-reusing prefill, first-token logits, native sampling) and
``vocab.py`` its tokenizer member (``LlamaTokenizer``), the model loading every weight load goes through, and the
vocabulary-only load a remote engine takes its vocabulary from; ``batch.py`` scores many prompts per decode;
``lib.py`` imports llama-cpp-python, quietly; ``kernels.py`` chooses llama.cpp's CPU kernels for this machine,
with ``kernel_canary.py`` its child process. Nothing is imported here: ``python -m ...kernel_canary`` and the CLI's
options (which read ``kernels.MODES``) load no more than they use.
"""
