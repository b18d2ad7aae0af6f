"""`refusal-edge train`: a Hugging Face chat checkpoint + CoCoNot-format data -> a calibrated refusal-token GGUF.

Workstation side (torch, transformers, peft); the runtime never imports it. Modules: coconot (refusal messages, the
stratified split; shared with the default model's recipe; no torch), data (rows, split, examples; no torch), model
(base + new token rows + LoRA, and ``Encoder``: chat template -> token ids), distill (the base model's own answers,
cached), loop (training, checkpoints, resume), outputs (merged checkpoint, GGUF, policy, report), options (``TrainOptions``: every
setting of a run, from which cli's flags are generated), pipeline (the run), errors, cli.
"""
