"""`refusal-edge train`: a Hugging Face chat checkpoint + CoCoNot-format data -> a calibrated refusal-token GGUF.

Workstation side (torch, transformers, peft); the runtime never imports it. Modules: data (rows, split, examples;
no torch), encode (chat template -> token ids), model (base + new token rows + LoRA), distill (the base model's own
answers, cached), loop (training, checkpoints, resume), outputs (merged checkpoint, GGUF, policy, report), cli.
"""
