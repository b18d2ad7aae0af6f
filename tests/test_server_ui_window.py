"""The dials page over a long conversation (issue 27), in a real Chromium against the tiny model at n_ctx 256:
every turn answers, the page asks for truncation "auto" and sends only from the model's cut on, one marker
between turns says how many earlier turns the model no longer sees (the count the server reports, which is
RefusalModel.fit's), every turn stays on screen, and What if? re-decides the window the model saw."""

from test_server_ui import ARTIFACTS, browser, dials_page, send  # noqa: F401 (fixture)
from test_server_ui_chat import requests_of, serving

MAX_TOKENS = 16  # the page's Max tokens: the room fit() leaves for each answer
LIGHTHOUSE = "tell me more about the lighthouse on the northern cape, its keepers, its storms and the ships it saved"
# Long and short turns: the cut moves one turn at a time, and several at once for the longest message.
MESSAGES = [f"Message 1: {LIGHTHOUSE}", f"Message 2: {LIGHTHOUSE}", "3: go on", "4: and then?", "5: why?",
            f"Message 6: {LIGHTHOUSE}, and {LIGHTHOUSE} again, the whole story", "7: thanks", f"Message 8: {LIGHTHOUSE}"]
MARKER = "#transcript > li.cut"


def _as_sent(messages: list[dict]) -> list[dict]:
    """What the server keeps of a message the page sends (requests.parse_messages)."""
    return [{k: m[k] for k in ("role", "content", "refusal_token") if k in m} for m in messages]


def _turns_left(history: list[dict], dropped: int) -> list[dict]:
    users = [i for i, m in enumerate(history) if m["role"] == "user"]
    return history[users[dropped]:] if dropped < len(users) else []


def test_a_long_conversation_goes_on_with_a_marker_at_the_cut(browser, tiny_gguf, tiny_model):  # noqa: F811
    with serving(tiny_gguf, n_ctx=256, max_tokens=64) as running, dials_page(browser, running.url) as page:
        sent = requests_of(page)
        decided = []
        page.on("request", lambda r: decided.append(r.post_data_json)
                if r.url.endswith("/v1/refusal/decisions") else None)
        page.fill("#max-tokens", str(MAX_TOKENS))
        cut, cuts = 0, []
        for turn, text in enumerate(MESSAGES, 1):
            history = page.evaluate("() => state.history")  # the whole conversation, as the page holds it
            answer = send(page, text, turn)["answer"]  # every turn answers
            request = sent[-1]
            assert request["truncation"] == "auto" and request["max_tokens"] == MAX_TOKENS
            # The page sends the conversation from the model's cut on: the turns the model lost stay out.
            assert request["messages"] == _turns_left(history, cut) + [{"role": "user", "content": text}]
            cut += tiny_model.fit(_as_sent(request["messages"]), MAX_TOKENS).dropped_turns
            cuts.append(cut)
            assert page.locator("#transcript > li.user").all_inner_texts() == MESSAGES[:turn]  # all on screen
            assert page.get_attribute(answer, "data-state") == "done"
            if cut:
                assert page.locator(MARKER).count() == 1
                assert page.inner_text(MARKER) == \
                    f"{cut} earlier turn{'s' if cut > 1 else ''} left out to fit the model's context"
                after = page.evaluate(f"() => document.querySelector('{MARKER}').nextElementSibling.textContent")
                assert after == MESSAGES[cut]  # the marker stands before the first turn the model still sees
            else:
                assert page.locator(MARKER).count() == 0
        steps = [b - a for a, b in zip(cuts, cuts[1:])]
        assert cuts[0] == 0 and 1 in steps and max(steps) >= 2, cuts  # the cut moved by one turn and by several

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.evaluate(f"() => document.querySelector('{MARKER}').scrollIntoView({{block: 'center'}})")
        page.screenshot(path=str(ARTIFACTS / "dials-page-window.png"))

        page.click("#what-if")  # re-decides the window the model saw, which fits; the whole history would not
        page.wait_for_selector("#what-if-result .decision")
        assert _as_sent(decided[-1]["input"][0]) == tiny_model.fit(_as_sent(sent[-1]["messages"]), MAX_TOKENS).messages
        assert page.inner_text("#status") == ""

        page.click("#new-chat")
        send(page, "hello again", 1)
        assert page.locator(MARKER).count() == 0 and len(sent[-1]["messages"]) == 1

