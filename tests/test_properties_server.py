"""Property-based tests (Hypothesis) of raw request bytes sent to a live server (issue 19): whatever arrives on the
socket (any method, path, Host, Origin, content type, body: JSON mutated, nested deep, integers past 4,300 digits,
or bytes that are not HTTP at all), the server answers below 500 or closes the connection; never a 5xx."""

from __future__ import annotations

import json
import socket

import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("uvicorn")
from hypothesis import given, settings, strategies as st  # noqa: E402

from outcomes import Outcomes  # noqa: E402
from test_properties import FAST, JSON, mostly  # noqa: E402

from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.requests import Limits  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402

PATHS = ["/v1/chat/completions", "/api/chat", "/api/generate", "/v1/moderations", "/v1/refusal/decisions",
         "/api/show", "/v1/models", "/v1/models/tiny", "/api/tags", "/api/ps", "/api/version", "/health", "/",
         "/ui/dials.js", "/ui/../app.py", "/nope", "/v1/models/%ff%fe", "*"]
HELLO = [{"role": "user", "content": "hi"}]
FIELDS = {"messages": HELLO, "input": "hi", "prompt": "hi", "model": "tiny", "stream": False, "max_tokens": 1,
          "options": {"num_predict": 1}}
NASTY_BODIES = st.sampled_from([
    b"[" * 1000 + b"]" * 1000, b'{"input": ' + b"[" * 900 + b'"x"' + b"]" * 900 + b"}",
    b'{"max_tokens": ' + b"9" * 5000 + b"}", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1'
    + b"0" * 400 + b"}", b'{"messages": [{"role": "user", "content": "hi"}], "repeat_penalty": Infinity}',
    b'{"prompt": "hi", "options": {"top_k": 99999999999999999999}}', b"\xff\xfe\x00", b"", b"null", b"{}"])
BODIES = (st.dictionaries(st.sampled_from(sorted(FIELDS)), JSON, max_size=4).map(
    lambda extra: json.dumps({**FIELDS, **extra}).encode())
          | JSON.map(lambda v: json.dumps(v).encode()) | NASTY_BODIES | st.binary(max_size=64))
HOSTS = st.sampled_from(["OWN", "localhost:PORT", "evil.example:PORT", "localhost:1", "[::1]:PORT", None, "", "a b",
                         "[::1", "127.0.0.1:PORT:PORT"])
ORIGINS = st.sampled_from([None, "http://HOST", "http://evil.example", "null", "", "http://127.0.0.1:1"])
TYPES = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                         "application/json; charset=utf-8", "application/x+json", ";;", "\x7f"])
METHODS = st.sampled_from(["GET", "POST", "POST", "POST", "OPTIONS", "PUT", "DELETE", "HEAD", "BREW", "G\x00T"])


@pytest.fixture(scope="module")
def live(tiny_model):
    settings_ = ServerSettings(model_id="tiny", policy=tiny_model.default_policy, limits=Limits(max_tokens=2))
    with BackgroundServer(create_app(SlotPool([tiny_model]), settings_)) as running:
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


def exchange(address, data: bytes, half_close: bool = False) -> bytes:
    """Send ``data``, read until the server closes or has sent a whole answer's head (a server that does neither
    within the socket's timeout fails the test). ``half_close``: say nothing more is coming, for bytes that are
    not a whole request (a server would rightly wait for the rest)."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while b"\r\n\r\n" not in received:
            part = sock.recv(65536)
            if not part:
                break
            received += part
        return received


def status_of(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit() else None


def test_raw_requests_never_get_a_5xx(live):
    seen = Outcomes()

    @settings(FAST, max_examples=250)
    # each part mostly well-formed, so that many requests reach the routes and the model, not only the parser
    @given(method=mostly(st.sampled_from(["GET", "POST"]), METHODS), path=st.sampled_from(PATHS),
           host=mostly(st.just("OWN"), HOSTS), origin=mostly(st.just(None), ORIGINS),
           content_type=mostly(st.just("application/json"), TYPES),
           body=mostly(st.just(json.dumps(FIELDS).encode()), BODIES),
           length_delta=mostly(st.just(0), st.sampled_from([-1, -5])))
    def check(method, path, host, origin, content_type, body, length_delta):
        address = live
        own = f"{address[0]}:{address[1]}"
        lines = [f"{method} {path} HTTP/1.1"]
        if host is not None:
            lines.append("Host: " + host.replace("OWN", own).replace("PORT", str(address[1])))
        if origin is not None:
            lines.append("Origin: " + origin.replace("HOST", own))
        if content_type is not None:
            lines.append("Content-Type: " + content_type)
        lines += [f"Content-Length: {max(0, len(body) + length_delta)}", "Connection: close"]
        request = "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body
        status = status_of(exchange(address, request))
        assert status is None or status < 500, (status, request[:300])
        seen["no answer" if status is None else f"{status // 100}xx"] += 1

    check()
    # a server that closed every connection, or refused everything, would pass the loop above
    seen.require(**{"2xx": 20, "4xx": 50})


def test_bytes_that_are_not_http_never_get_a_5xx(live):
    seen = Outcomes()

    @settings(FAST, max_examples=150)
    @given(data=st.binary(max_size=200) | st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")))
    def check(data):
        status = status_of(exchange(live, data, half_close=True))
        assert status is None or status < 500, (status, data)
        seen["no answer" if status is None else f"{status // 100}xx"] += 1

    check()
    seen.require(**{"4xx": 10})  # garbage is answered 400, not only dropped
