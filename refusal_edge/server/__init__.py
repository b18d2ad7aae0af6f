"""The server: OpenAI's, Ollama's and the decision APIs over one answer path (``service.py``), assembled by
``app.py``; ``cli.py`` is `refusal-edge serve`. Importing this package imports neither click nor Starlette.

Modules: app (the Starlette app: routes, API key, error handlers), cli (`refusal-edge serve`), run (uvicorn on a
socket bound first; BackgroundServer), browser_guard (no web page drives the server: Origin, Host, Content-Type),
service (the answer path every API shares, its one streaming loop), slots (one thread per model instance, the job
queue), requests (reading and validating a request: limits, JSON, ChatRequest), errors (ApiError, each API's error
shape), openai (OpenAI's routes and streaming), openai_wire (OpenAI's response shapes), ollama (Ollama's routes and
streaming), ollama_wire (Ollama's requests translated, its response lines), decisions (moderations and decisions
without generation), headers (the decision in response headers), truncation (a window over a long conversation),
guard_mode (the slots of serve --answer-engine), ui (the dials page).
"""
