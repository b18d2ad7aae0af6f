"""The dials page as a chat, in a real Chromium: answers stream in rendered as Markdown, the view follows them
unless the reader scrolls up, Stop and Esc end an answer keeping what arrived, answers and code copy, a new
conversation starts over, decisions fold away, the page works 390 px wide, and categories may be named anything.

Known Markdown comes through the real server from a scripted slot: the tiny model's own decision, then a fixed
answer streamed at a set pace (the tiny model writes no Markdown, and ends every answer within ~10 ms).
Screenshots of a rendered answer with code are kept in artifacts/ (git-ignored; $REFUSAL_EDGE_ARTIFACTS moves it)."""

import json
import time
from contextlib import contextmanager

import pytest

from refusal_edge import RefusalModel
from refusal_edge.model import Chunk
from refusal_edge.server.app import ServerSettings, create_app
from refusal_edge.server.requests import Limits
from refusal_edge.server.run import BackgroundServer
from refusal_edge.server.slots import SlotPool
from conftest import THREADS
from test_server import API_KEY
from test_server_ui import ARTIFACTS, browser, dials_page, send  # noqa: F401 (fixture)
from tiny_model import build_tiny_gguf

CODE = 'def greet(name):\n    return f"<b>hello {name}</b>"  # HTML stays text\n\nprint(greet("world"))'
ANSWER = f"""## Greeting someone

Here is a **small** function, with *one* parameter and a `return`:

```python
{CODE}
```

1. Define `greet`.
2. Call it:
   - with a name, or
   - with `input()`.

| call | result |
|------|--------|
| `greet("a")` | `<b>hello a</b>` |

See [the tutorial](https://docs.python.org/3/tutorial/) for more.
"""
LONG = "\n\n".join(f"Paragraph {i}: " + "words that keep the answer going " * 6 for i in range(60))
AT_LATEST = "() => { const t = document.getElementById('transcript'); return t.scrollHeight - t.scrollTop - t.clientHeight <= 48; }"
SCROLL_TOP = "() => document.getElementById('transcript').scrollTop"


class ScriptedModel:
    """A slot that is the tiny model in everything but the answer's text: the model's real decision for the
    request, then ``text`` in pieces of ``piece`` characters, ``pace`` seconds apart."""

    def __init__(self, model, text: str, pace: float, piece: int = 16) -> None:
        self.model, self.text, self.pace, self.piece = model, text, pace, piece

    def __getattr__(self, name):
        return getattr(self.model, name)

    def stream(self, messages, policy=None, *, sampling=None, **_):
        yield self.model.decide(messages[-1:], policy)  # the last message: long answers overflow the tiny context
        pieces = [self.text[i:i + self.piece] for i in range(0, len(self.text), self.piece)]
        for n, piece in enumerate(pieces, 1):
            time.sleep(self.pace)
            yield Chunk(piece, "stop" if n == len(pieces) else None, n)


@contextmanager
def serving(gguf, n_ctx: int = 256, max_tokens: int = 64, script: str | None = None, pace: float = 0.0,
            piece: int = 16):
    model = RefusalModel.load(gguf, n_ctx=n_ctx, n_threads=THREADS)
    slot = model if script is None else ScriptedModel(model, script, pace, piece)
    settings = ServerSettings(model_id="tiny", policy=model.default_policy, api_key=API_KEY,
                              limits=Limits(max_body_bytes=256_000, max_messages=32, max_tokens=max_tokens))
    try:
        with BackgroundServer(create_app(SlotPool([slot]), settings)) as running:
            yield running
    finally:
        model.close()


@pytest.fixture(scope="module")
def scripted(tiny_gguf):
    with serving(tiny_gguf, script=ANSWER, pace=0.005) as running:
        yield running


@pytest.fixture(scope="module")
def slow_long(tiny_gguf):
    """Long answers arriving over several seconds: enough to scroll away from, and to jump back to."""
    with serving(tiny_gguf, script=LONG, pace=0.02, piece=32) as running:
        yield running


@pytest.fixture(scope="module")
def long_tiny(tiny_gguf):
    """An answer to stop in the middle of. The tiny model's own ends (EOS) after ~40 tokens and 10 ms, whatever
    max_tokens says, so the long answer is scripted and paced; the decision is still the model's."""
    with serving(tiny_gguf, max_tokens=4000, script=LONG, pace=0.02, piece=32) as running:
        yield running


def wait_until(page, script: str, timeout: float = 20.0, arg=None):
    """Polls from Python: the page's CSP forbids the eval that Playwright's wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(25)


def requests_of(page) -> list[dict]:
    """The bodies of the chat requests the page sends, as they are sent."""
    bodies = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if r.url.endswith("/chat/completions") else None)
    return bodies


def answer_text(page, answer: str) -> str:
    return page.inner_text(f"{answer} .answer")


def test_an_answer_streams_in_as_markdown_with_code_and_copies(browser, scripted):  # noqa: F811
    with dials_page(browser, scripted.url) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=scripted.url)
        answer = send(page, "show me a function", 1)["answer"]
        # What streamed in is exactly what the renderer makes of the whole answer at once.
        rendered = page.inner_html(f"{answer} .answer")
        assert rendered == page.evaluate(
            "(source) => { const box = document.createElement('div'); box.append(renderMarkdown(source)); "
            "return box.innerHTML; }", ANSWER)
        assert page.inner_text(f"{answer} .answer h2") == "Greeting someone"
        assert page.inner_text(f"{answer} .answer pre code") == CODE
        assert page.locator(f"{answer} .answer > ol > li").count() == 2
        assert page.inner_text(f"{answer} .answer table td:last-child code") == "<b>hello a</b>"
        assert page.get_attribute(f"{answer} .answer a", "href") == "https://docs.python.org/3/tutorial/"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dials-page.png"))
        assert (ARTIFACTS / "dials-page.png").stat().st_size > 10_000

        page.click(f"{answer} .copy-answer")
        page.wait_for_selector(f"{answer} .copy-answer:has-text('Copied')")
        assert page.evaluate("() => navigator.clipboard.readText()") == ANSWER  # the Markdown as it came
        page.click(f"{answer} .copy-code")
        page.wait_for_selector(f"{answer} .copy-code:has-text('Copied')")
        assert page.evaluate("() => navigator.clipboard.readText()") == CODE


def test_the_view_follows_the_stream_until_the_reader_scrolls_up(browser, slow_long):  # noqa: F811
    with dials_page(browser, slow_long.url) as page:
        transcript = page.locator("#transcript").bounding_box()
        answer = send(page, "tell me a long story", 1, state=None)["answer"]
        wait_until(page, "() => { const t = document.getElementById('transcript'); return t.scrollHeight > 2 * t.clientHeight; }")
        assert page.evaluate(AT_LATEST)  # followed the answer down
        assert page.is_hidden("#jump")

        page.mouse.move(transcript["x"] + transcript["width"] / 2, transcript["y"] + transcript["height"] / 2)
        page.mouse.wheel(0, -800)  # the reader scrolls up to read
        wait_until(page, f"() => !({AT_LATEST})()")
        page.wait_for_selector("#jump", state="visible")
        held, length = page.evaluate(SCROLL_TOP), len(answer_text(page, answer))
        wait_until(page, f"() => document.querySelector('{answer} .answer').textContent.length > {length + 500}")
        assert page.evaluate(SCROLL_TOP) == held  # more arrived and the view stayed where the reader is
        assert page.get_attribute(answer, "data-state") == "streaming"

        page.click("#jump")
        assert page.evaluate(AT_LATEST)
        page.wait_for_selector("#jump", state="hidden")
        page.wait_for_selector(f"{answer}[data-state=done]")
        assert page.evaluate(AT_LATEST)  # and followed it again to the end
        assert page.inner_text(f"{answer} .answer").startswith("Paragraph 0:")


def test_stop_and_escape_end_the_answer_keeping_what_arrived(browser, long_tiny):  # noqa: F811
    with dials_page(browser, long_tiny.url) as page:
        sent = requests_of(page)
        page.fill("#max-tokens", "3500")
        for turn, how in ((1, "button"), (2, "Escape")):
            answer = send(page, "hello world, tell me a story", turn, state=None)["answer"]
            wait_until(page, f"() => document.querySelector('{answer} .answer').textContent.length > 20")
            assert page.is_visible("#stop") and page.is_hidden("#send")
            if how == "button":
                page.click("#stop")
            else:
                page.keyboard.press("Escape")
            page.wait_for_selector(f"{answer}[data-state=stopped]")
            kept = answer_text(page, answer)
            page.wait_for_timeout(300)
            assert answer_text(page, answer) == kept and len(kept) > 20  # what arrived stays; nothing more comes
            assert page.inner_text(f"{answer} .stopped") == "stopped"
            assert page.is_visible("#send") and page.is_hidden("#stop")
            assert "Stopped" in page.inner_text("#status")
            assert sent[-1]["max_tokens"] == 3500
        # The stopped answer is part of the conversation that goes on.
        assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "user"]
        assert sent[1]["messages"][1]["content"].strip()
        health = page.request.get(long_tiny.url + "/health").json()
        assert health["cancelled"] >= 2 and health["busy"] == 0  # the server stopped generating both


def test_a_new_conversation_and_folding_decisions(browser, scripted):  # noqa: F811
    with dials_page(browser, scripted.url) as page:
        sent = requests_of(page)
        first, second = send(page, "one", 1)["answer"], send(page, "two", 2)["answer"]
        assert page.evaluate(f"() => document.querySelector('{first} details.decision').open") is False
        assert page.evaluate(f"() => document.querySelector('{second} details.decision').open") is True
        assert page.is_hidden(f"{first} .decision .bar") and page.is_visible(f"{second} .decision .bar")
        page.click(f"{first} .decision summary")  # folded decisions open again on demand
        assert page.is_visible(f"{first} .decision .bar")
        assert "turn 2" in page.inner_text(f"{second} .decision summary")

        page.click("#new-chat")
        assert page.locator("#transcript li").count() == 0
        fresh = send(page, "three", 1)["answer"]
        assert "turn 1" in page.inner_text(f"{fresh} .decision summary")
        assert [m["content"] for m in sent[-1]["messages"]] == ["three"]
        assert len(sent[1]["messages"]) == 3


def test_the_page_at_390_px_wide(browser, scripted):  # noqa: F811
    with dials_page(browser, scripted.url, viewport={"width": 390, "height": 844}) as page:
        answer = send(page, "show me a function", 1)["answer"]
        width = "() => document.documentElement.scrollWidth"
        assert page.evaluate(width) <= 390  # nothing, not even code or a table, widens the page
        for part in ("", " .answer pre", " .answer .table", " .decision"):
            box = page.locator(f"{answer}{part}").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, part
        assert page.is_visible("#prompt") and page.is_visible("#send") and page.is_hidden("#dials")
        page.screenshot(path=str(ARTIFACTS / "dials-page-390.png"))

        page.click("#toggle-dials")  # the dials take the screen in the chat's place
        assert page.is_visible("#dials") and page.is_hidden("#chat")
        assert page.get_attribute("#toggle-dials", "aria-expanded") == "true"
        for slider in page.locator("#thresholds input").all():
            box = slider.bounding_box()
            assert box["width"] > 60 and box["x"] + box["width"] <= 390
        assert page.evaluate(width) <= 390
        page.click("#toggle-dials")
        assert page.is_visible("#chat") and page.is_hidden("#dials")


def test_categories_named_like_object_properties(browser, tmp_path):  # noqa: F811
    """A model's category can be called anything, "__proto__" and "constructor" included."""
    names = ("constructor", "__proto__", "toString", "hasOwnProperty", "valueOf")
    gguf = build_tiny_gguf(tmp_path / "odd.gguf", category_names=names)
    with serving(gguf) as running, dials_page(browser, running.url) as page:
        labels = page.locator("#thresholds label").all_inner_texts()
        assert labels == ["constructor", "__proto__", "tostring", "hasownproperty", "valueof"]
        for name in names:
            page.focus(f'#thresholds input[data-category="{name}"]')
            page.keyboard.press("Home" if name == "__proto__" else "End")
        decision = send(page, "hello world", 1)
        assert decision["token"] == "[Incomplete requests]"  # the token that "__proto__" names
        assert page.inner_text(f"{decision['answer']} .bar.chosen .name") == "__proto__"
        with page.expect_download() as download:
            page.click("#save")
        saved_file = tmp_path / "refusal-policy.json"
        download.value.save_as(saved_file)
        saved = json.loads(saved_file.read_text())
        assert saved["thresholds"] == {"constructor": 1, "__proto__": 0, "toString": 1, "hasOwnProperty": 1,
                                       "valueOf": 1}
        page.click("#reset")
        assert page.input_value('#thresholds input[data-category="__proto__"]') != "0"
        page.set_input_files("#load", str(saved_file))
        wait_until(page, """() => document.querySelector('#thresholds input[data-category="__proto__"]').value === "0" """)
        assert page.input_value('#thresholds input[data-category="constructor"]') == "1"
