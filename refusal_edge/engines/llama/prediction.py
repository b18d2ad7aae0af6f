"""Whether decision-token prediction pays for this model on this machine: timed once, cached, and shown by doctor.

With prediction (``LlamaEngine.score_ahead``) the prompt is prefilled together with the decision token the policy
is expected to pick, as one more row with its own logits. When the policy picks it (a hit), the first answer token
is sampled from logits already there: the decode step that would evaluate the decision token is saved. When it
picks another (a miss), the extra row was paid for nothing. Which is larger depends on the CPU, the kernels of the
llama.cpp build (repacked kernels take rows in fours and compute each leftover row with a pass over all the
weights), the model (a wide vocabulary makes the second output row dear) and the thread count, so it is measured on
the loaded model itself: prefills of short prompts, one of each length modulo 4, with and without the extra row,
and the decode step a hit saves, interleaved. Prediction is on when

- a hit saves more than a miss costs (so it pays whenever the policy repeats its last decision more often than
  not: the default model answers most prompts, and ``[respond]`` is what it predicts first), and
- the prompt's scores are the same bits with the extra row as without. llama.cpp computes the last layer and the
  output rows only for the positions whose logits are asked for, and with two such rows some kernels (float16 and
  float32 weights) round differently than with one; where they do, prediction could move a probability in its last
  digits, and it must never change a decision, so it stays off.

The verdict is cached per model file, llama.cpp build, CPU, kernel choice and thread count, beside the kernel
canary's (``$REFUSAL_EDGE_CACHE/kernels/``). ``predict_decision=True/False`` (``serve --[no-]predict-decision``)
skips all this.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...files import write_text
from .kernels import canary_dir, choose as choose_kernels, host_facts

PREDICTION_VERSION = 1  # part of the cache key: a changed measurement is taken again
SHORT_PROMPT = 16  # tokens: the saving and the extra row cost about the same at any short length, a shorter one less
MIN_ROUNDS = 8  # each length modulo 4 twice, alternating which arm goes first
MAX_ROUNDS = 16
BUDGET_S = 0.5  # more rounds while they fit in this; a large model gets MIN_ROUNDS
NOTICE_S = 2.0  # a measurement that takes longer than this says so on stderr, once
TEXT = "Please tell me about the history of the bicycle and how it changed the way people travel every day."


@dataclass(frozen=True)
class PredictionTiming:
    """Medians over ``rounds`` interleaved rounds, in milliseconds, on prompts of ``lengths`` tokens."""

    lengths: tuple[int, ...]
    prefill_ms: float  # the prompt alone, one output row
    first_step_ms: float  # the decode that evaluates the decision token after it (with the token before it)
    ahead_ms: float  # the prompt and the predicted token in one decode, two output rows
    exact: bool  # the prompt's logits were the same bits with the extra row, every round
    rounds: int
    seconds: float  # what measuring took
    cached: bool = False

    @property
    def hit_saves_ms(self) -> float:
        return self.prefill_ms + self.first_step_ms - self.ahead_ms

    @property
    def miss_costs_ms(self) -> float:
        return self.ahead_ms - self.prefill_ms


@dataclass(frozen=True)
class PredictionChoice:
    on: bool
    reason: str
    mode: str  # auto, on or off
    timing: PredictionTiming | None = None

    def describe(self) -> str:
        return f"decision-token prediction {'on' if self.on else 'off'}: {self.reason}"

    def to_dict(self) -> dict:
        return {"on": self.on, "mode": self.mode, "reason": self.reason,
                "timing": asdict(self.timing) if self.timing else None}


def decide(timing: PredictionTiming) -> PredictionChoice:
    """The verdict from the figures: a pure function (module docstring)."""
    t = timing
    figures = (f"a hit saves {t.hit_saves_ms:.1f} ms of the first token, a miss costs {t.miss_costs_ms:.1f} ms "
               f"(prefill of a {t.lengths[0]}-{t.lengths[-1]}-token prompt {t.prefill_ms:.1f} ms, with the predicted "
               f"token {t.ahead_ms:.1f} ms, the decode step a hit saves {t.first_step_ms:.1f} ms; "
               + ("cached for this model, build, CPU and thread count)" if t.cached else
                  f"measured now in {t.seconds:.1f} s, median of {t.rounds})"))
    if not t.exact:
        return PredictionChoice(False, "the extra row changes the prompt's scores in their last bits with this "
                                       f"model's kernels, and prediction must not move a decision; {figures}",
                                "auto", t)
    if t.hit_saves_ms > t.miss_costs_ms:
        return PredictionChoice(True, figures, "auto", t)
    return PredictionChoice(False, f"it does not pay here: {figures}", "auto", t)


def forced(on: bool) -> PredictionChoice:
    return PredictionChoice(on, f"forced {'on' if on else 'off'} (predict_decision={on})", "on" if on else "off")


def choose(engine, predicted: int) -> PredictionChoice:
    """The measured choice for ``engine`` (a LlamaEngine): cached, or timed now with ``predicted`` as the expected
    token."""
    try:
        record = _record_path(engine)
    except OSError:  # the model file is gone from under us: measure, cache nothing
        record = None
    timing = _read(record) if record is not None else None
    if timing is None:
        timing = measure(engine, predicted)
        try:
            if record is not None:
                write_text(record, json.dumps({"timing": asdict(timing), "model": str(engine.path),
                                               "load": engine.load_facts}, indent=1))
        except OSError:  # no writable cache: measured again by the next process
            pass
    return decide(timing)


def measure(engine, predicted: int, budget_s: float = BUDGET_S) -> PredictionTiming:
    """Time both ways on ``engine``'s own model, interleaved; leaves its context empty."""
    prompts = _prompts(engine)
    t_start = time.perf_counter()
    engine.reset()
    engine.prefill(prompts[0][:4])  # the weights paged in before anything is timed
    plain, step, ahead, exact, rounds, told = [], [], [], True, 0, False
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and time.perf_counter() - t_start < budget_s):
        prompt = prompts[rounds % len(prompts)]
        rows = {}
        for predicting in ((False, True) if rounds % 2 == 0 else (True, False)):
            engine.reset()
            t0 = time.perf_counter()
            if predicting:
                engine.prefill([*prompt, predicted], outputs=2)
                ahead.append(time.perf_counter() - t0)
                rows[True] = engine.logits(-2).copy()
            else:
                engine.prefill(prompt)
                t1 = time.perf_counter()
                rows[False] = engine.logits().copy()
                engine.advance([*prompt, predicted])
                plain.append(t1 - t0)
                step.append(time.perf_counter() - t1)
        exact = exact and bool(np.array_equal(rows[False], rows[True]))
        rounds += 1
        if not told and time.perf_counter() - t_start > NOTICE_S:
            told = True
            print("refusal-edge: timing decision-token prediction for this model on this machine (once; "
                  "predict_decision=True/False skips it)", file=sys.stderr)
    engine.reset()
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    return PredictionTiming(tuple(sorted({len(p) for p in prompts})), ms(plain), ms(step), ms(ahead), exact, rounds,
                            time.perf_counter() - t_start)


def _prompts(engine) -> list[list[int]]:
    """Four ordinary prompts of consecutive lengths (every residue modulo 4), short enough for any context."""
    tokenizer = engine.tokenizer
    text = tokenizer.tokenize(TEXT, special=False)
    start = [tokenizer.bos] if tokenizer.add_bos and tokenizer.bos >= 0 else []
    body = (start + text * (SHORT_PROMPT // max(1, len(text)) + 2))
    base = max(1, min(SHORT_PROMPT, engine.n_ctx - 6))
    return [body[:n] for n in range(base, base + 4)]


def record_dir() -> Path:
    return canary_dir()


def _record_path(engine) -> Path:
    path = Path(engine.path).resolve()
    stat = path.stat()
    use_extra_bufts = choose_kernels(engine.load_facts.get("repack")).use_extra_bufts
    key = json.dumps([PREDICTION_VERSION, host_facts().key, str(path), stat.st_size, stat.st_mtime_ns,
                      engine.load_facts.get("threads"), engine.load_facts.get("n_gpu_layers"), use_extra_bufts],
                     sort_keys=True)
    return record_dir() / f"prediction-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _read(record: Path) -> PredictionTiming | None:
    try:
        raw = json.loads(record.read_text(encoding="utf-8"))["timing"]
        timing = PredictionTiming(tuple(int(n) for n in raw["lengths"]), float(raw["prefill_ms"]),
                                  float(raw["first_step_ms"]), float(raw["ahead_ms"]), bool(raw["exact"]),
                                  int(raw["rounds"]), float(raw["seconds"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return timing if timing.lengths else None
