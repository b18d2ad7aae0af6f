"""The engines: what runs the model, one package each, below the seam they implement (``refusal_edge/engine.py``).

- ``llama/``: llama.cpp in-process, the default engine (``RefusalModel.load``);
- ``remote/``: a model served by llama.cpp's llama-server or vLLM, reached over HTTP (``RefusalModel.connect``).

Each engine is an ``Engine`` whose vocabulary is a member, ``engine.tokenizer`` (a ``Tokenizer``). A new engine is
one more package here plus its tests; nothing above the seam changes. Nothing is imported here, so loading one
engine never loads another.
"""
