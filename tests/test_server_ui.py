"""The dials page at / in a real headless Chromium (Debian's, driven by Playwright): ask for the key, send a
message, move a slider with the keyboard, see the what-if and the next decision change, save and load a policy.
The chat itself (Markdown, stop, scrolling, copying, phones) is in test_server_ui_chat.py and
test_server_ui_markdown.py, which share this file's fixtures."""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge.policy import Policy  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402
from test_server import API_KEY, server  # noqa: E402,F401 (fixtures)

CHROMIUM = os.environ.get("REFUSAL_EDGE_CHROMIUM", "/usr/bin/chromium")
# No network, no sandbox (containers run as root), nothing phoning home during a test.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("REFUSAL_EDGE_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
SAFETY_NAME = "Requests with safety concerns"
SAFETY_TOKEN = f"[{SAFETY_NAME}]"
LAPTOP = {"width": 1366, "height": 768}


def chromium_or_skip():
    """Skip for a developer without Chromium; on CI (CI=true) a missing browser is a failure, not a skip."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem, sync_playwright = "playwright is not installed: pip install -e '.[test]'", None
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set $REFUSAL_EDGE_CHROMIUM)"
    if problem:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the browser test: {problem}")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = chromium_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextmanager
def dials_page(browser, url: str, api_key: str | None = API_KEY, **context_options):
    """The page at ``url``, the key given if asked, ready; fails on any script error, CSP violation or failed
    request (but the first 401, which is how the page learns it needs the key)."""
    context = browser.new_context(**{"viewport": LAPTOP, "accept_downloads": True, **context_options})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
    page.goto(url + "/")
    if api_key is not None:
        page.wait_for_selector("#key", state="visible")  # the server has a key: the page asks for it once
        page.fill("#key", api_key)
        page.press("#key", "Enter")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture
def page(browser, server):
    with dials_page(browser, server.url) as opened:
        yield opened


def send(page, text: str, turn: int, state: str = "done") -> dict:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")  # the keyboard sends
    answer = f"#transcript > li:nth-child({turn} of .assistant)"  # a marker between turns is an <li> too
    decision = page.wait_for_selector(f"{answer} .decision")
    if state:  # selectors, not wait_for_function: the page's CSP forbids eval
        page.wait_for_selector(f"{answer}[data-state={state}]")
        page.wait_for_selector("#send:not([hidden])")
    return {"token": decision.get_attribute("data-token"), "bars": decision.query_selector_all(".bar"),
            "answer": answer}


def test_a_slider_moves_the_next_decision(page, tiny_model):
    hello = [{"role": "user", "content": "hello world"}]
    first_expected = tiny_model.decide(hello)
    assert first_expected.token != SAFETY_TOKEN  # else moving the safety slider could not show anything
    first = send(page, "hello world", 1)
    assert first["token"] == first_expected.token
    assert len(first["bars"]) == 1 + len(tiny_model.categories)  # [respond] and one bar per category
    assert page.text_content("#transcript li.assistant .answer")

    slider = f'#thresholds input[data-category="{SAFETY_NAME}"]'
    page.focus(slider)
    page.keyboard.press("Home")  # keyboard: the safety threshold to 0
    assert page.input_value(slider) == "0"
    what_if = page.wait_for_selector(f'#what-if-result .decision[data-token="{SAFETY_TOKEN}"]')  # live, no generation
    # The one short name of the category: the server's, which the CLI's decision line prints too.
    assert what_if.query_selector(".bar.chosen .name").text_content() == "safety"
    assert page.text_content(f'label[for="{page.get_attribute(slider, "id")}"]') == "safety"
    assert len(page.query_selector_all("#transcript li.assistant")) == 1

    second = send(page, "hello world", 2)
    assert second["token"] == SAFETY_TOKEN


def test_a_policy_is_saved_and_loaded_as_a_file(page, tiny_model, tmp_path):
    page.select_option("#rule", "binary")
    page.focus("#dials summary")
    page.keyboard.press("Enter")  # opens the biases
    page.fill("#bias-0", "1.5")
    with page.expect_download() as download:
        page.click("#save")
    saved = Policy.from_dict(json.loads(Path(download.value.path()).read_text()), tiny_model.categories)
    assert (saved.rule, saved.biases) == ("binary", {"respond": 1.5})

    calibrated = tmp_path / "calibrated.toml"  # the TOML that refusal-edge calibrate writes
    Policy(rule="per-category", thresholds={SAFETY_NAME: 0.25}, biases={SAFETY_NAME: -2.0}).save(calibrated)
    page.set_input_files("#load", str(calibrated))
    page.wait_for_selector("#status:has-text('Loaded calibrated.toml')")
    assert page.input_value("#rule") == "per-category"
    assert page.input_value(f'#thresholds input[data-category="{SAFETY_NAME}"]') == "0.25"
    assert page.input_value("#bias-0") == "0"


def test_the_page_is_shipped_static_and_off_with_no_ui(tiny_model):
    for ui in (True, False):
        settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy, ui=ui)
        with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running:
            with httpx.Client(base_url=running.url, trust_env=False) as http:
                page, script = http.get("/"), http.get("/ui/dials.js")
                escape = http.get("/ui/..%2Fapp.py")
        if ui:
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert script.status_code == 200 and "http" not in script.text.replace("http.", "")
            assert escape.status_code == 404
        else:
            assert (page.status_code, script.status_code) == (404, 404)


# another origin ----------------------------------------------------------------------------------------------
# What a web page on another origin tries (issue 19): make the model work with "simple" requests a browser sends
# without asking (no-cors, text/plain or no type at all), and read what the server knows.
ATTACK = """async ([target, paths, body]) => {
  const sent = {};
  for (const path of paths) {
    for (const init of [{headers: {"Content-Type": "text/plain"}, body},
                        {body: new TextEncoder().encode(body).buffer}]) {  // an ArrayBuffer body has no type
      try {
        const reply = await fetch(target + path, {method: "POST", mode: "no-cors", ...init});
        sent[path] = reply.type;  // "opaque": the page cannot see status or body
      } catch (error) {
        sent[path] = "failed";
      }
    }
  }
  const read = {};
  for (const path of ["/v1/models", "/health", "/api/tags"]) {
    try {
      read[path] = await (await fetch(target + path)).text();
    } catch (error) {
      read[path] = "blocked";
    }
  }
  return {sent, read};
}"""


@pytest.fixture(scope="module")
def open_server(tiny_gguf):
    """A server without an API key, as most desktop servers run: only the origin checks stand in a page's way."""
    from refusal_edge import RefusalModel
    from conftest import THREADS

    model = RefusalModel.load(tiny_gguf, n_ctx=256, n_threads=THREADS)
    settings = ServerSettings(model_id="tiny", policy=model.default_policy)
    with BackgroundServer(create_app(SlotPool([model]), settings)) as running:
        yield running
    model.close()


@pytest.fixture(scope="module")
def other_origin():
    """A page on another port of loopback: another origin, as a tab on any web site would be."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>elsewhere</title><p>an ordinary page"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_page_on_another_origin_can_neither_drive_nor_read_the_server(browser, open_server, other_origin):
    with httpx.Client(base_url=open_server.url, trust_env=False) as http:
        before = http.get("/health").json()
        context = browser.new_context()
        page = context.new_page()
        page.goto(other_origin + "/")
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "input": "hi", "prompt": "hi",
                           "stream": False, "max_tokens": 1})
        paths = ["/v1/chat/completions", "/api/chat", "/api/generate", "/v1/moderations", "/v1/refusal/decisions"]
        result = page.evaluate(ATTACK, [open_server.url, paths, body])
        context.close()
        after = http.get("/health").json()
    assert set(result["sent"]) == set(paths)  # the browser did send them (opaque answers)...
    for counter in ("completed", "failed", "cancelled", "busy"):
        assert after[counter] == before[counter], (counter, before, after)  # ...and the server did no work
    assert set(result["read"].values()) == {"blocked"}, result["read"]  # and the page could read nothing
