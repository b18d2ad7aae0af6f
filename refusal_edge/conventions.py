"""What every verb shares besides its options: the environment variables it reads and the exit codes it returns.
One table each, rendered into `refusal-edge --help` (cli.py) and described in docs/cli.md; tests/test_cli_vocabulary.py
checks them against the code that reads the variables and the code that exits. Plain data: `--help` imports it."""

from __future__ import annotations

HISTORY_ENV = "REFUSAL_EDGE_HISTORY"
HOST_ENV = "REFUSAL_EDGE_HOST"
PORT_ENV = "REFUSAL_EDGE_PORT"

# name -> what it sets. The modules that read them name them too (arguments.MODEL_ENV, files.CACHE_ENV, ...).
ENVIRONMENT = {
    "REFUSAL_EDGE_MODEL": "The model when a verb is given none (a GGUF path or owner/repo/file.gguf) [default: the "
                          "embedded default model].",
    "REFUSAL_EDGE_CACHE": "Where the default model, eval's scores and kernel checks are kept [default: "
                          "$XDG_CACHE_HOME/refusal-edge, else ~/.cache/refusal-edge].",
    "REFUSAL_EDGE_REPACK": "--repack: llama.cpp's repacked/AMX CPU kernels, on, off or auto.",
    "REFUSAL_EDGE_ENGINE_API_KEY": "--engine-api-key: the bearer token sent to a remote --engine.",
    "REFUSAL_EDGE_ANSWER_API_KEY": "--answer-api-key: the bearer token sent to guard mode's --answer-engine.",
    HOST_ENV: "serve --host.",
    PORT_ENV: "serve --port.",
    "REFUSAL_EDGE_API_KEY": "serve --api-key: the key /v1 requests must carry.",
    "REFUSAL_EDGE_ORIGINS": "serve --allowed-origin, comma-separated (as OLLAMA_ORIGINS).",
    HISTORY_ENV: "chat's line history file [default: ~/.refusal_edge_history].",
    "HF_HUB_OFFLINE": "1: fetch nothing from the Hugging Face hub; hub models come from its cache.",
    "HF_HOME": "The Hugging Face cache (hub files in $HF_HOME/hub, or $HF_HUB_CACHE).",
    "HF_ENDPOINT": "Another Hugging Face hub (a mirror) for hub models and pull; HF_TOKEN: a private repository's key.",
}

EXIT_OK = 0
EXIT_FAILURE = 1  # click.ClickException's code: the CLI turns every RefusalEdgeError into one
EXIT_USAGE = 2  # click.UsageError's code

EXIT_CODES = {
    EXIT_OK: "Success.",
    EXIT_FAILURE: "Failure, named in one line: a missing model, bad data, an engine that fails, a failed doctor "
                  "check, inspect's problems. Ctrl-C stops a job with 1 too (serve shuts down with 0).",
    EXIT_USAGE: "Usage error: an unknown option, a value out of its range, a threshold for an unknown category.",
}
