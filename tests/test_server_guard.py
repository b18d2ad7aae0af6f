"""No web page can drive the server (issue 19, items 1-2): a cross-origin POST, a rebound Host name and a body that
is not JSON are refused before any work; curl, SDKs and the server's own page keep working. Against the app in
process (Starlette's TestClient: Host "testserver") and, for the Host check, a live server on loopback."""

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge.cli import main  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.browser_guard import Access, json_content_type, origins_from_env, split_host  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402

HELLO = [{"role": "user", "content": "hello"}]
WORK = {  # every route that makes the model work, with a body it would answer
    "/v1/chat/completions": {"messages": HELLO, "max_tokens": 1},
    "/api/chat": {"messages": HELLO, "stream": False, "options": {"num_predict": 1}},
    "/api/generate": {"prompt": "hello", "stream": False, "options": {"num_predict": 1}},
    "/v1/moderations": {"input": "hello"},
    "/v1/refusal/decisions": {"input": "hello"},
}
JSON_TYPE = {"Content-Type": "application/json"}


def work_done(client) -> int:
    health = client.get("/health").json()
    return health["completed"] + health["failed"] + health["busy"] + health["queued"]


def error_message(reply) -> str:
    error = reply.json()["error"]
    return error if isinstance(error, str) else error["message"]


@pytest.mark.parametrize("path", WORK)
def test_a_cross_origin_no_cors_post_is_refused_before_any_work(app_client, path):
    before = work_done(app_client)
    # What fetch(url, {mode: "no-cors", method: "POST", body}) sends: text/plain and the page's origin.
    reply = app_client.post(path, content=json.dumps(WORK[path]),
                            headers={"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"})
    assert reply.status_code == 403, reply.text
    assert "http://evil.example" in error_message(reply) and "--allowed-origin" in error_message(reply)
    assert isinstance(reply.json()["error"], str) == path.startswith("/api/")  # Ollama's shape under /api/
    assert "access-control-allow-origin" not in reply.headers
    # Even with a JSON type (a page would need a preflight for that, and get none) the origin is refused.
    reply = app_client.post(path, json=WORK[path], headers={"Origin": "http://127.0.0.1:1"})
    assert reply.status_code == 403
    assert work_done(app_client) == before


NOT_JSON_TYPES = ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", None]


@pytest.mark.parametrize("content_type", NOT_JSON_TYPES)
@pytest.mark.parametrize("browser", [{"Origin": "http://testserver"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Mode": "no-cors"}])
def test_a_browser_body_that_is_not_sent_as_json_is_415(app_client, content_type, browser):
    """A page's own origin, or a browser's Sec-Fetch headers without an Origin: the body must say it is JSON."""
    before = work_done(app_client)
    headers = {**browser, **({"Content-Type": content_type} if content_type else {})}
    for path, body in WORK.items():
        reply = app_client.post(path, content=json.dumps(body), headers=headers)
        assert reply.status_code == 415, (path, reply.text)
        assert "Content-Type: application/json" in error_message(reply)
    assert work_done(app_client) == before


@pytest.mark.parametrize("content_type", NOT_JSON_TYPES)
def test_a_client_without_origin_may_send_json_under_any_type(app_client, content_type):
    """Ollama's documented `curl …/api/generate -d '{…}'` sends form-urlencoded (or, piped, no type): served."""
    headers = {"Content-Type": content_type} if content_type else {}
    for path, body in WORK.items():
        reply = app_client.post(path, content=json.dumps(body), headers=headers)
        assert reply.status_code == 200, (path, reply.text)
    reply = app_client.post("/api/generate", content="prompt=hello", headers=headers)
    assert reply.status_code == 400 and "not valid JSON" in error_message(reply)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_ollamas_curl_example_as_curl_sends_it(tiny_model):
    """Ollama's README, verbatim but for the address: `curl http://localhost:11434/api/generate -d '{...}'`."""
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy)
    body = '{"model": "tiny", "prompt": "Why is the sky blue?", "stream": false, "options": {"num_predict": 2}}'
    with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running:
        def curl(*extra):
            done = subprocess.run(["curl", "-s", "--noproxy", "*", "-w", "\n%{http_code}", *extra,
                                   f"{running.url}/api/generate", "-d", body],
                                  capture_output=True, text=True, timeout=60)
            text, _, status = done.stdout.rpartition("\n")
            return int(status), json.loads(text)

        status, reply = curl()
        assert status == 200 and reply["done"] and reply["model"] == "tiny", reply
        status, reply = curl("-H", "Origin: http://evil.example")
        assert status == 403 and "http://evil.example" in reply["error"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                                          "application/vnd.refusal+json"])
def test_json_content_types_and_the_servers_own_origin_are_served(app_client, content_type):
    reply = app_client.post("/v1/refusal/decisions", content=json.dumps(WORK["/v1/refusal/decisions"]),
                            headers={"Content-Type": content_type, "Origin": "http://testserver"})
    assert reply.status_code == 200, reply.text
    assert "access-control-allow-origin" not in reply.headers  # same origin: no CORS needed


def test_clients_without_origin_keep_working(app_client):
    assert app_client.post("/api/generate", json=WORK["/api/generate"]).status_code == 200
    assert app_client.get("/v1/models").status_code == 200  # GETs carry no body and no content type


def test_an_allowed_origin_is_served_with_cors_and_its_preflight_answered(tiny_model):
    access = Access(origins=("http://localhost:3000", "https://*.example.org"))
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy, access=access)
    from starlette.testclient import TestClient

    with TestClient(create_app(SlotPool([tiny_model]), settings)) as client:
        for origin in ("http://localhost:3000", "https://app.example.org"):
            preflight = client.options("/v1/moderations", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization"})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "Content-Type" in preflight.headers["access-control-allow-headers"]
            reply = client.post("/v1/moderations", json={"input": "hi"}, headers={"Origin": origin})
            assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == origin
        assert client.post("/v1/moderations", json={"input": "hi"},
                           headers={"Origin": "http://localhost:3001"}).status_code == 403
        assert client.options("/v1/moderations", headers={"Origin": "http://evil.example"}).status_code == 403


def test_rebound_host_names_are_refused_and_loopback_names_served(tiny_model):
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy)
    with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running:
        port = int(running.url.rsplit(":", 1)[1])
        with httpx.Client(base_url=running.url, trust_env=False) as http:
            for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}",
                         f"127.0.0.2:{port}", f"localhost:{port + 1}", "[::1", f"localhost:{port}x"):
                for path in ("/v1/models", "/api/tags", "/"):
                    reply = http.get(path, headers={"Host": host})
                    assert reply.status_code == 403, (host, path, reply.text)
                show = http.post("/api/show", json={"model": "tiny"}, headers={"Host": host})
                assert show.status_code == 403 and "template" not in show.text
                assert "DNS rebinding" in error_message(show)
            for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost", f"LOCALHOST:{port}"):
                assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host
            assert http.get("/health").json()["completed"] == 0  # nothing refused reached a slot


def test_allowed_hosts_widen_the_host_check(tiny_model):
    for hosts, served in ((("mybox.lan",), True), (("*",), True), ((), False)):
        settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy, access=Access(hosts=hosts))
        with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running:
            port = running.url.rsplit(":", 1)[1]
            with httpx.Client(base_url=running.url, trust_env=False) as http:
                reply = http.get("/v1/models", headers={"Host": f"mybox.lan:{port}"})
        assert (reply.status_code == 200) == served, (hosts, reply.text)


def test_the_pieces():
    assert split_host("[::1]:8080") == ("::1", 8080) and split_host("LocalHost") == ("localhost", None)
    assert split_host("a:b") is None and split_host("[::1]x") is None and split_host(":80") is None
    assert json_content_type("application/problem+json") and not json_content_type("text/json+plain")
    assert origins_from_env(" http://a:1, ,https://b ") == ("http://a:1", "https://b")
    assert Access(origins=("http://localhost:*",)).origin_allowed("http://localhost:5173")
    assert not Access(origins=("http://localhost:*",)).origin_allowed("http://localhost.evil:1")


def test_serve_takes_allowed_origins_and_refuses_an_empty_api_key(tiny_gguf):
    for blank in ("", " ", "\t "):
        result = CliRunner().invoke(main, ["serve", str(tiny_gguf), "--api-key", blank])
        assert result.exit_code == 2 and "--api-key (or $REFUSAL_EDGE_API_KEY) is empty or blank" in result.output
        with pytest.raises(ValueError, match="api_key is blank"):
            ServerSettings(model_id="m", policy=None, api_key=blank)
    result = CliRunner().invoke(main, ["serve", str(tiny_gguf)], env={"REFUSAL_EDGE_API_KEY": " "})
    assert result.exit_code == 2 and "is empty or blank" in result.output  # was: every client locked out
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--allowed-origin" in help_text and "REFUSAL_EDGE_ORIGINS" in help_text and "--allowed-host" in help_text


def test_the_api_key_covers_every_api_route_and_matches_byte_exactly(tiny_model):
    from starlette.routing import Route

    key = "clé-🔑"
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy, api_key=key)
    app = create_app(SlotPool([tiny_model]), settings)
    with BackgroundServer(app) as running, httpx.Client(base_url=running.url, trust_env=False) as http:
        for route in app.routes:
            if not isinstance(route, Route) or not route.path.startswith(("/api", "/v1")):
                continue
            method = "GET" if "GET" in route.methods else "POST"
            reply = http.request(method, route.path.replace("{model}", "tiny"), json={})
            assert reply.status_code == 401, (route.path, reply.status_code)  # was: GET /api/version answered 200
        raw = key.encode()  # the key's UTF-8 bytes, sent as they are (httpx would refuse a non-ASCII str)
        good = http.get("/api/version", headers=[(b"Authorization", b"Bearer " + raw)])
        assert good.status_code == 200, good.text  # was: a UTF-8 key never matched
        for wrong in (b"Bearer  " + raw, b"Bearer " + raw[:-1], b"Bearer cle", "Bearer clé".encode("latin-1")):
            assert http.get("/api/version", headers=[(b"Authorization", wrong)]).status_code == 401, wrong
