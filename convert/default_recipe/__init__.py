"""The embedded default model's recipe, for maintainers: fine-tune SmolLM2 (``train_default``), measure it
(``measure_default``). Not a user verb: the converter the CLI exposes is the rest of ``convert/``; this part
needs the CoCoNot data and torch, and writes ``refusal_edge/assets/default_delta.npz``."""
