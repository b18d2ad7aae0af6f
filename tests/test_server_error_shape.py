"""One place picks an error's shape (errors.error_body): Ollama's ``{"error": "..."}`` under /api/ and OpenAI's
``{"error": {...}}`` elsewhere, for an ApiError, a path with no route, the guard's refusals and a bug (a 500)."""

import pytest

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from refusal_edge.server import ollama_wire  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.errors import ApiError, error_body, openai_error_body  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402

HELLO = [{"role": "user", "content": "hello"}]


def _is_ollama(body) -> bool:
    return isinstance(body.get("error"), str)


def _is_openai(body) -> bool:
    return isinstance(body.get("error"), dict) and {"message", "type", "param", "code"} <= body["error"].keys()


def test_error_body_follows_the_path():
    exc = ApiError(400, "bad thing", param="x")
    assert error_body("/api/chat", exc) == {"error": "bad thing"}
    assert error_body("/api/no-such-route", exc) == {"error": "bad thing"}
    assert error_body("/v1/chat/completions", exc) == openai_error_body(exc) and _is_openai(openai_error_body(exc))
    assert _is_openai(error_body("/apix", exc))  # only the /api/ prefix is Ollama's


@pytest.fixture()
def client(tiny_model):
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy)
    with TestClient(create_app(SlotPool([tiny_model]), settings), raise_server_exceptions=False) as c:
        yield c


def test_client_mistakes_and_missing_routes_get_each_api_shape(client):
    assert _is_ollama(client.post("/api/chat", json={"messages": "nope"}).json())
    assert _is_openai(client.post("/v1/chat/completions", json={"messages": "nope"}).json())
    assert _is_ollama(client.get("/api/nothing-here").json())
    assert _is_openai(client.get("/v1/nothing-here").json())
    cross_origin = {"Origin": "https://evil.example"}
    assert _is_ollama(client.post("/api/chat", json={"messages": HELLO}, headers=cross_origin).json())
    assert _is_openai(client.post("/v1/moderations", json={"input": "hi"}, headers=cross_origin).json())


def test_a_bug_is_a_500_in_the_shape_of_the_api_it_happened_in(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ollama_wire, "chat_body", broken)
    reply = client.post("/api/chat", json={"messages": HELLO, "stream": False, "options": {"num_predict": 1}})
    assert reply.status_code == 500 and _is_ollama(reply.json())
