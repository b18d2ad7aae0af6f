"""The paper's SFT loop: loss on the answer (decision token weighted), LoRA and the decision rows at their own
learning rates, warm-up then cosine, checkpoints that a resumed run continues exactly, Ctrl-C saves and stops.

The batch plan is a pure function of the seed, so a resumed run only needs the step, the trainable tensors and the
optimizer state; LoRA has no dropout, so nothing else draws random numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import TrainError
from .model import Encoded


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    batch_size: int = 8
    lr: float = 1e-3
    rows_lr: float = 3e-3  # new embedding rows need a higher learning rate than LoRA
    first_weight: float = 2.0  # loss weight of the decision token
    seed: int = 0
    save_every: int = 50
    bf16: bool = False


def plan(data: Sequence[Encoded], cfg: LoopConfig) -> list[list[int]]:
    """Batches of example indices for every step: similar lengths together (little padding), order shuffled,
    a new shuffle each pass over the data."""
    out, epoch = [], 0
    while len(out) < cfg.steps:
        rng = random.Random(cfg.seed * 1000003 + epoch)
        order = sorted(range(len(data)), key=lambda i: (len(data[i].ids), rng.random()))
        chunk = [order[k:k + cfg.batch_size] for k in range(0, len(order), cfg.batch_size)]
        rng.shuffle(chunk)
        out += chunk
        epoch += 1
    return out[: cfg.steps]


def shared_prefix(batch: Sequence[Encoded]) -> int:
    """How many leading tokens every example of the batch shares, up to the first answer position: the chat
    template's opening (a system prompt, often) is the same in every example, so it is run once per batch."""
    first = batch[0].ids
    limit = min(min(e.first_target for e in batch), *(len(e.ids) for e in batch))
    n = 0
    while n < limit and all(e.ids[n] == first[n] for e in batch):
        n += 1
    return n


def hidden_states(decoder, batch: Sequence[Encoded], device) -> tuple[torch.Tensor, int]:
    """The decoder's last hidden states of the batch (right-padded) from position ``offset`` on. The shared prefix
    goes through the model once, its keys and values repeated for every example: exact, gradients included."""
    width = max(len(e.ids) for e in batch)
    ids = torch.tensor([e.ids + [0] * (width - len(e.ids)) for e in batch], device=device)
    mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in batch], device=device)
    offset = shared_prefix(batch) if len(batch) > 1 else 0
    if offset < 8:  # too short to be worth a second call
        return decoder(input_ids=ids, attention_mask=mask).last_hidden_state, 0
    name = _CACHE_ARGUMENT.get(type(decoder)) or _CACHE_ARGUMENT.setdefault(
        type(decoder), "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values")
    prefix = decoder(input_ids=ids[:1, :offset], use_cache=True)
    cache = getattr(prefix, name)
    cache.batch_repeat_interleave(len(batch))
    rest = decoder(input_ids=ids[:, offset:], attention_mask=mask, use_cache=True, **{name: cache})
    return rest.last_hidden_state, offset


_CACHE_ARGUMENT: dict[type, str] = {}  # transformers renamed past_key_values to cache


def batch_loss(causal_lm, batch: Sequence[Encoded], first_weight: float, device, bf16: bool) -> torch.Tensor:
    """Weighted next-token cross-entropy on the answer positions only (the decision token weighted, or not a
    target at all for an example that only teaches what follows it); the output matrix runs on those rows
    alone (not on every position of the prompt: with a large vocabulary that is most of the work)."""
    rows, cols, targets, weights = [], [], [], []
    for r, e in enumerate(batch):
        for k, target in enumerate(e.targets):
            rows.append(r)
            cols.append(e.first_target + k)
            targets.append(target)
            weights.append((first_weight if e.learns_decision else 0.0) if k == 0 else 1.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        hidden, offset = hidden_states(causal_lm.get_decoder(), batch, device)
        logits = causal_lm.get_output_embeddings()(hidden[torch.tensor(rows), torch.tensor(cols) - offset])
        cap = getattr(causal_lm.config, "final_logit_softcapping", None)  # Gemma: as its forward (and llama.cpp)
        if cap:
            logits = cap * torch.tanh(logits / cap)
    w = torch.tensor(weights, device=device)
    losses = F.cross_entropy(logits.float(), torch.tensor(targets, device=device), reduction="none")
    return (losses * w).sum() / w.sum()


def fingerprint(data: Sequence[Encoded], cfg: LoopConfig, extra: dict) -> str:
    """What a checkpoint must match to be resumed: the data, the loop settings (except where to stop) and the rest."""
    h = hashlib.sha256(json.dumps({**asdict(cfg), "steps": None, "save_every": None, **extra}, sort_keys=True,
                                  default=str).encode())
    for e in data:
        h.update(json.dumps([e.ids, e.first_target, e.targets] + ([] if e.learns_decision else [False])).encode())
    return h.hexdigest()


def _trainable(peft_model, rows) -> dict[str, torch.nn.Parameter]:
    named = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    named.update({f"decision_rows.{n}": p for n, p in rows.named_parameters()})
    return named


def save_checkpoint(path: Path, step: int, params: dict, opt, key: str) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "fingerprint": key, "params": {n: p.detach().clone() for n, p in params.items()},
                "optimizer": opt.state_dict()}, tmp)
    tmp.replace(path)


@contextlib.contextmanager
def _stop_on_sigint():
    """Ctrl-C ends the current step, then the loop saves and stops (a second Ctrl-C interrupts at once)."""
    import signal

    stop = _Flag()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C cannot reach this loop anyway
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _deterministic_kernels():
    """Same seed, machine and threads, same bytes: without this a CPU kernel in backward races between threads
    (two outcomes seen from the third step on, 2 threads, torch 2.13), and two runs of the recipe differed in
    the last bits of every weight. The deterministic variants cost about 3 % here (a whole recipe run 19.6 ->
    20.3 min warm, one run each)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class _Flag:
    def __init__(self):
        self.value = False

    def set(self):
        self.value = True

    def __bool__(self):
        return self.value


def train(peft_model, rows, data: Sequence[Encoded], cfg: LoopConfig, *, checkpoint: Path, resume: bool,
          key: str, device, stop_at: int | None = None, progress: bool = True, log=print) -> dict:
    """Runs ``cfg.steps`` steps (from the checkpoint's step with ``resume``), or pauses after step ``stop_at``
    (a chunk of a longer run: the schedule stays that of ``cfg.steps``); returns figures for the report."""
    from refusal_edge.progress import Progress

    causal_lm = peft_model.get_base_model()
    params = _trainable(peft_model, rows)
    lora = [p for n, p in params.items() if not n.startswith("decision_rows.")]
    new_rows = [p for n, p in params.items() if n.startswith("decision_rows.")]
    base_lrs = [cfg.lr, cfg.rows_lr]  # a loaded optimizer state holds the scheduled rates of its last step
    opt = torch.optim.AdamW([{"params": lora, "lr": cfg.lr}, {"params": new_rows, "lr": cfg.rows_lr}],
                            weight_decay=0.0, betas=(0.9, 0.99))
    start = 0
    if resume:
        if not checkpoint.is_file():
            raise TrainError(f"--resume: no checkpoint at {checkpoint}")
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["fingerprint"] != key:
            raise TrainError(f"--resume: {checkpoint} was made with other data or settings; start without --resume")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["params"][n])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        log(f"resuming at step {start}/{cfg.steps}")
    steps = plan(data, cfg)
    warmup = max(1, cfg.steps // 20)
    peft_model.train()
    bar = Progress("training", cfg.steps, unit="steps", enabled=progress, initial=start)
    tokens, t0, smooth, done = 0, time.perf_counter(), None, start
    with _stop_on_sigint() as stop, _deterministic_kernels():
        for step in range(start + 1, min(cfg.steps, stop_at or cfg.steps) + 1):
            scale = step / warmup if step <= warmup else \
                0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * scale
            batch = [data[i] for i in steps[step - 1]]
            loss = batch_loss(causal_lm, batch, cfg.first_weight, device, cfg.bf16)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora + new_rows, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += sum(len(e.ids) for e in batch)
            smooth = loss.item() if smooth is None else 0.9 * smooth + 0.1 * loss.item()
            bar.detail = f"loss {smooth:.3f}, {tokens / (time.perf_counter() - t0):.0f} tokens/s"
            bar.update(1)
            done = step
            if step % cfg.save_every == 0 or step in (cfg.steps, stop_at) or stop:
                save_checkpoint(checkpoint, step, params, opt, key)
            if stop:
                bar.close(stopped=True)
                raise TrainError(f"interrupted: saved step {step}/{cfg.steps} in {checkpoint}; "
                                 "run the same command with --resume to continue")
    bar.finish() if done == cfg.steps else bar.close(stopped=True)  # paused at --stop-after: it says so
    spent = time.perf_counter() - t0
    return {"steps": cfg.steps, "done": done, "resumed_from": start, "final_loss": smooth,
            "seconds": round(spent, 1), "tokens_per_second": round(tokens / spent, 1) if tokens else None}
