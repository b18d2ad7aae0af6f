"""The server: OpenAI's, Ollama's and the decision APIs over one answer path (``service.py``), assembled by
``app.py``; ``cli.py`` is `refusal-edge serve`. Importing this package imports neither click nor Starlette."""
