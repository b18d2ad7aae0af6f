"""Disconnects and a full queue. The tiny model ends its answers within milliseconds, too soon to tell a
stopped generation from a finished one, so these tests wrap it in an answer that never ends on its own:
only the server's cancellation can stop it."""

import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge import Chunk, RefusalModel  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from conftest import THREADS  # noqa: E402

ASK = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4096}
WAIT_S = 30.0  # an upper bound for conditions that hold within milliseconds


class EndlessModel:
    """The real model's decision, then text until the server stops asking."""

    def __init__(self, model: RefusalModel) -> None:
        self.model, self.spec = model, model.spec
        self.started, self.stopped = threading.Semaphore(0), threading.Semaphore(0)

    def stream(self, messages, policy, sampling):
        self.started.release()
        try:
            yield self.model.decide(messages, policy)
            while True:
                time.sleep(0.002)
                yield Chunk("la ")
        finally:
            self.stopped.release()


@pytest.fixture
def endless(tiny_gguf):
    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    endless = EndlessModel(model)
    settings = ServerSettings(model_id="endless", policy=model.default_policy)
    with BackgroundServer(create_app(SlotPool([endless], max_queue=1), settings)) as running:
        with httpx.Client(base_url=running.url, timeout=WAIT_S, trust_env=False) as http:
            yield endless, http
    model.close()


def first_content(lines) -> str:
    """Keep ``lines`` referenced while the connection should stay open: dropping it closes the connection."""
    for line in lines:
        if '"content":"la ' in line:
            return line
    raise AssertionError("the stream ended without content")


def wait_for(http, **expected) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        stats = http.get("/health").json()
        if all(stats[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def test_a_streaming_client_that_leaves_stops_its_generation(endless):
    model, http = endless
    with http.stream("POST", "/v1/chat/completions", json={**ASK, "stream": True}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first_content(lines)
        assert model.stopped.acquire(timeout=0) is False  # still generating while the client is there
    assert model.stopped.acquire(timeout=WAIT_S), "generation went on after the client left"
    assert wait_for(http, busy=0, cancelled=1)["cancelled"] == 1


def test_a_waiting_client_that_leaves_stops_its_generation(endless):
    model, http = endless
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=ASK, timeout=0.5)  # non-streaming: the answer never comes
    assert model.stopped.acquire(timeout=WAIT_S), "generation went on after the client left"
    assert wait_for(http, busy=0, cancelled=1)["cancelled"] == 1


def test_a_full_queue_answers_503_and_the_slot_serves_the_next_request(endless):
    model, http = endless
    with http.stream("POST", "/v1/chat/completions", json={**ASK, "stream": True}) as running:
        lines = running.iter_lines()
        first_content(lines)  # the only slot is busy
        waiting = threading.Thread(target=lambda: _stream_one_chunk(http))
        waiting.start()
        assert wait_for(http, queued=1)["queued"] == 1
        reply = http.post("/v1/chat/completions", json=ASK)
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "server_busy"
    # The first client left, so the queued request gets the slot, streams, and leaves in turn.
    waiting.join(WAIT_S)
    assert not waiting.is_alive()
    assert model.started.acquire(timeout=0) and model.started.acquire(timeout=0)
    assert wait_for(http, busy=0, queued=0, cancelled=2)["cancelled"] == 2


def _stream_one_chunk(http) -> None:
    with http.stream("POST", "/v1/chat/completions", json={**ASK, "stream": True}) as response:
        first_content(response.iter_lines())


class _HangUpAfterDelivery:
    """An event loop stand-in that delivers at once and then sees the client hang up, as a finished request
    does: the window between handing over the last event and the worker looking at the job again."""

    def __init__(self) -> None:
        self.job = None

    def call_soon_threadsafe(self, callback, *args):
        callback(*args)
        self.job.cancel()


class _TwoEvents:
    def run(self, model):
        yield "decision"
        yield "last chunk"


def test_an_answer_delivered_in_full_counts_as_completed_even_if_the_client_hangs_up_at_once():
    import asyncio

    from refusal_edge.server.slots import CANCELLED, Job

    loop = _HangUpAfterDelivery()
    job = Job(_TwoEvents(), asyncio.new_event_loop())
    job._loop, loop.job = loop, job
    # The first event is delivered, then the client is gone: the second is never produced for nobody.
    assert SlotPool._run(model=None, job=job) == "cancelled"
    assert job.events.get_nowait() == "decision"
    assert job.events.get_nowait() is CANCELLED

    class OneEvent:
        def run(self, model):
            yield "the whole answer"

    job = Job(OneEvent(), asyncio.new_event_loop())
    job._loop, loop.job = loop, job
    assert SlotPool._run(model=None, job=job) == "completed"
