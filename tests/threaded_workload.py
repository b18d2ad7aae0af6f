"""N threads x M mixed decide/stream/score_many calls on one RefusalModel, compared with the same calls made
from one thread. Run as a script (``python threaded_workload.py MODEL.gguf THREADS CALLS``) so that a llama.cpp
abort (what sharing a context between threads did before the model's lock) fails one test, not the whole run.
Prints one JSON line: {"calls": n, "mismatches": [...], "errors": [...]}.
"""

from __future__ import annotations

import json
import sys
import threading


def conversation(thread: int, call: int) -> list[dict]:
    # Histories that share prefixes in some calls and not others, so the KV cache reuse is exercised both ways.
    words = ["hello world", "tell me a story about the sea", "what is the capital of france?"]
    history = [{"role": "user", "content": words[(thread + call) % 3] + f" ({call % 4})"}]
    if call % 2:
        history = [{"role": "system", "content": "be brief"}, *history]
    return history


def run_call(model, kind: str, messages: list[dict]):
    """A comparable summary of one call's result."""
    if kind == "decide":
        decision = model.decide(messages)
        return ["decide", decision.token_id, dict(decision.probabilities)]
    if kind == "stream":
        events = list(model.stream(messages, temperature=0, max_tokens=6))
        return ["stream", events[0].token_id, "".join(e.text for e in events[1:])]
    results = list(model.score_many([messages, conversation(0, 0)]))
    return ["score_many", [[*s.logits.tolist(), s.rest_logsumexp] for s, _ in results]]


def same(a, b) -> bool:
    """Equal, numbers within 1e-3: llama.cpp computes a prompt evaluated from a cached prefix in other batches
    than one evaluated whole, so the same numbers to a few ulps, not to the last bit."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-3
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def plan(threads: int, calls: int) -> list[list[tuple[str, list[dict]]]]:
    kinds = ("decide", "stream", "score_many")
    return [[(kinds[(t + c) % 3], conversation(t, c)) for c in range(calls)] for t in range(threads)]


def main(path: str, threads: int, calls: int) -> dict:
    from refusal_edge import RefusalModel

    model = RefusalModel.load(path, n_ctx=256, n_threads=1)
    work = plan(threads, calls)
    expected = [[run_call(model, kind, messages) for kind, messages in mine] for mine in work]
    got: list[list] = [[] for _ in range(threads)]
    errors: list[str] = []
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        start.wait()
        try:
            for kind, messages in work[t]:
                got[t].append(run_call(model, kind, messages))
        except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    mismatches = [f"thread {t} call {c}: {g} != {e}" for t in range(threads)
                  for c, (g, e) in enumerate(zip(got[t], expected[t])) if not same(g, e)]
    model.close()
    return {"calls": sum(map(len, got)), "mismatches": mismatches, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
