"""One RefusalModel shared by threads and coroutines: serialized calls, no crash, the single-thread results."""

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from refusal_edge import Chunk, Decision, ModelBusyError

HERE = Path(__file__).parent
MESSAGES = [{"role": "user", "content": "hello world"}]


def test_threads_sharing_a_model_get_the_single_thread_results(tiny_gguf):
    # In a child process: before the model's lock this aborted the process (GGML_ASSERT), which would end the
    # whole test run instead of failing this test.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(HERE / "threaded_workload.py"), str(tiny_gguf), "3", "12"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"the process died ({done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["mismatches"] == []
    assert report["calls"] == 36


def _in_thread(call, timeout=60.0):
    """Run ``call`` in another thread; its result, or its exception raised here. Fails (never hangs) on a deadlock."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call is still waiting for the model: deadlock"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_an_open_stream_holds_the_model_and_a_caller_may_refuse_to_wait(tiny_model):
    events = tiny_model.stream(MESSAGES, temperature=0, max_tokens=4)
    assert isinstance(next(events), Decision)  # the stream has started: it holds the model
    with pytest.raises(ModelBusyError, match="busy"):
        _in_thread(lambda: tiny_model.decide(MESSAGES, blocking=False))
    with pytest.raises(ModelBusyError, match="after waiting 0.2 s"):
        _in_thread(lambda: tiny_model.decide(MESSAGES, timeout=0.2))
    with pytest.raises(ModelBusyError, match="this thread still holds the model"):
        tiny_model.decide(MESSAGES)  # its own thread: a clear error, not a deadlock
    events.close()
    assert _in_thread(lambda: tiny_model.decide(MESSAGES, blocking=False)).token


def test_a_waiting_caller_runs_once_the_stream_is_exhausted(tiny_model):
    events = tiny_model.stream(MESSAGES, temperature=0, max_tokens=4)
    next(events)
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("decision", tiny_model.decide(MESSAGES)), daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not result  # it waits for the stream...
    rest = list(events)
    waiter.join(60)
    assert not waiter.is_alive() and result["decision"].token  # ...and runs once it is exhausted
    assert rest[-1].finish_reason


def test_an_abandoned_stream_does_not_deadlock_the_next_call(tiny_model):
    def abandon():
        events = tiny_model.stream(MESSAGES, temperature=0, max_tokens=8)
        next(events)
        next(events)  # half-way through, then dropped without close()

    _in_thread(abandon)
    assert _in_thread(lambda: tiny_model.decide(MESSAGES, timeout=30)).token


def test_the_with_form_releases_the_model_at_the_end_of_the_block(tiny_model):
    with tiny_model.stream(MESSAGES, temperature=0, max_tokens=8) as events:
        first = next(events)
    assert isinstance(first, Decision)
    assert tiny_model.decide(MESSAGES, blocking=False).token_id == first.token_id
    with tiny_model.score_many([MESSAGES, MESSAGES]) as results:
        next(results)
    assert tiny_model.scores(MESSAGES, blocking=False) is not None


def test_bad_timeouts_are_refused(tiny_model):
    with pytest.raises(ValueError, match="timeout"):
        tiny_model.decide(MESSAGES, timeout=-1)


def test_the_async_wrapper_under_gather_matches_the_sync_calls(tiny_model):
    conversations = [[{"role": "user", "content": text}] for text in ("hello", "tell me a story", "what is 2+2")]
    want_decisions = [tiny_model.decide(m).token_id for m in conversations]
    want_texts = [tiny_model.generate(m, temperature=0, max_tokens=6).text for m in conversations]

    async def streamed(messages):
        parts = []
        async with tiny_model.aio.stream(messages, temperature=0, max_tokens=6) as events:
            async for event in events:
                if isinstance(event, Chunk):
                    parts.append(event.text)
        return "".join(parts)

    async def abandoned():
        async for event in tiny_model.aio.stream(MESSAGES, temperature=0, max_tokens=6):
            break  # dropped after one event, without aclose

    async def main():
        ticks = 0

        async def ticker():  # the event loop keeps running while the model works
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        clock = asyncio.create_task(ticker())
        decisions, texts, _, scored = await asyncio.gather(
            asyncio.gather(*(tiny_model.aio.decide(m) for m in conversations)),
            asyncio.gather(*(streamed(m) for m in conversations)),
            abandoned(),
            tiny_model.aio.score_many(conversations),
        )
        clock.cancel()
        return decisions, texts, scored, ticks

    decisions, texts, scored, ticks = asyncio.run(main())
    assert [d.token_id for d in decisions] == want_decisions
    assert texts == want_texts
    assert len(scored) == 3 and all(isinstance(s, tuple) for s in scored)
    assert ticks > 1
    assert _in_thread(lambda: tiny_model.decide(MESSAGES, timeout=30)).token  # nothing left holding the model


def test_a_vocabulary_shared_by_threads_gives_every_thread_its_own_pieces(tiny_gguf):
    # A remote engine's vocabulary serves every slot's stream at once; pieces were read from one shared buffer.
    from refusal_edge.engines.llama.vocab import load_tokenizer

    tokenizer = load_tokenizer(tiny_gguf)
    want = [tokenizer.piece(t) for t in range(tokenizer.n_vocab)]
    wrong = []

    def read():
        for _ in range(100):
            wrong.extend(t for t in range(tokenizer.n_vocab) if tokenizer.piece(t) != want[t])

    pool = [threading.Thread(target=read) for _ in range(4)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    tokenizer.close()
    assert wrong == []


def test_a_thread_safe_engine_is_not_serialized():
    from refusal_edge.access import ModelLock
    from refusal_edge.engines.remote.engine import RemoteEngine

    assert RemoteEngine.thread_safe
    free = ModelLock(serialize=False)
    with free.hold(blocking=False), free.hold(blocking=False):  # a second caller, even in the same thread
        pass


def test_a_stream_read_to_its_last_chunk_frees_the_model_without_being_exhausted(tiny_model):
    events = tiny_model.stream(MESSAGES, temperature=0, max_tokens=4)
    for event in events:  # stops at the answer's end, as callers that watch finish_reason do
        if isinstance(event, Chunk) and event.finish_reason:
            break
    assert tiny_model.decide(MESSAGES, blocking=False).token  # the same thread, the stream still referenced
    results = tiny_model.score_many([MESSAGES, MESSAGES])
    assert len(list(zip(["a", "b"], results))) == 2  # zip stops reading after the last key
    assert tiny_model.scores(MESSAGES, blocking=False) is not None
    events.close()
    results.close()
