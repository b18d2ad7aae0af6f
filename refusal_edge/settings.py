"""Defaults that more than one interface states: the Python API's keyword defaults, the CLI's options and the
server's limits all name these, so each default changes in one place."""

N_CTX = 4096  # tokens a sequence (prompt and answer) may hold: LlamaEngine(n_ctx=...), --ctx

# What one request may ask of `refusal-edge serve` (server/requests.Limits, and its options).
SERVER_MAX_BODY_BYTES = 1 << 20
SERVER_MAX_MESSAGES = 256
SERVER_MAX_TOKENS = 4096  # the largest max_tokens a request may ask for, and its default
SERVER_MAX_STOP = 16
SERVER_MAX_PARALLEL = 1024  # slots (requests served at once): --parallel, and an engine's reported slot count
SERVER_MAX_QUEUE = 64  # requests that may wait for a slot (server/slots.SlotPool)

CALIBRATION_HOLDOUT = 0.25  # share of the data `calibrate` keeps out of calibration to check its policy (--holdout)
