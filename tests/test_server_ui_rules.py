"""The dials page takes the rules from the server: the rule list and what each does from /v1/models
(``refusal.rules``), the threshold drawn on each bar from the decision itself (``thresholds_in_force``). Rewriting
what the server says (Playwright routes) changes what the page shows, so the page cannot be restating the rules."""

from contextlib import contextmanager

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from refusal_edge.rules import REGISTRY  # noqa: E402
from refusal_edge.server.app import ServerSettings, create_app  # noqa: E402
from refusal_edge.server.run import BackgroundServer  # noqa: E402
from refusal_edge.server.slots import SlotPool  # noqa: E402
from test_server_ui import LAPTOP, SAFETY_NAME, browser  # noqa: E402,F401 (fixture)

SAID = {"per-category": "What the server says per-category does.", "binary": "What the server says binary does."}


@pytest.fixture(scope="module")
def keyless(tiny_model):
    settings = ServerSettings(model_id="tiny", policy=tiny_model.default_policy)
    with BackgroundServer(create_app(SlotPool([tiny_model]), settings)) as running:
        yield running


@contextmanager
def page_with(browser, url, rewrite):  # noqa: F811
    """The page, with ``rewrite(path, json)`` applied to every JSON answer of the server before the page sees it."""
    context = browser.new_context(viewport=LAPTOP)
    errors = []

    def handle(route):
        response = route.fetch()
        path = route.request.url[len(url):]
        route.fulfill(response=response, json=rewrite(path, response.json()))

    context.route(lambda address: address.endswith(("/v1/models", "/v1/refusal/decisions")), handle)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert errors == [], errors


def test_the_rule_list_and_its_help_are_the_servers(browser, keyless):  # noqa: F811
    def rewrite(path, body):
        if path == "/v1/models":
            body["data"][0]["refusal"]["rules"] = SAID
        return body

    with page_with(browser, keyless.url, rewrite) as page:
        options = page.eval_on_selector_all("#rule option", "(options) => options.map((o) => o.value)")
        assert options == list(SAID)
        assert page.text_content("#rule-help") == SAID["per-category"]
        page.select_option("#rule", "binary")
        assert page.text_content("#rule-help") == SAID["binary"]
    with page_with(browser, keyless.url, lambda path, body: body) as page:  # unchanged: the registry's own
        options = page.eval_on_selector_all("#rule option", "(options) => options.map((o) => o.value)")
        assert options == list(REGISTRY)
        assert page.text_content("#rule-help") == REGISTRY[page.input_value("#rule")].summary


def test_the_bars_draw_the_thresholds_the_decision_reports(browser, keyless):  # noqa: F811
    def rewrite(path, body):
        if path == "/v1/refusal/decisions":
            held = body["data"][0]["thresholds_in_force"]
            held["categories"][SAFETY_NAME] = 0.123
            held["refusal_probability"] = 0.456
        return body

    with page_with(browser, keyless.url, rewrite) as page:
        assert page.input_value("#rule") == "per-category"  # no rule of its own would draw a summed bar
        page.fill("#prompt", "hello world")
        page.press("#prompt", "Enter")
        page.wait_for_selector("#transcript li.assistant[data-state=done]")
        page.click("#what-if")
        view = page.wait_for_selector("#what-if-result .decision")
        labels = [bar.get_attribute("aria-label") for bar in view.query_selector_all(".bar")]
        assert any(label.startswith("safety: ") and label.endswith(", threshold 0.12") for label in labels), labels
        assert any(label.startswith("any refusal: ") and label.endswith(", threshold 0.46") for label in labels), labels


def test_a_category_without_a_threshold_in_force_has_no_marker(browser, keyless, tiny_model):  # noqa: F811
    def rewrite(path, body):
        if path == "/v1/refusal/decisions":
            body["data"][0]["thresholds_in_force"]["categories"] = {}
        return body

    with page_with(browser, keyless.url, rewrite) as page:
        page.fill("#prompt", "hello world")
        page.press("#prompt", "Enter")
        page.wait_for_selector("#transcript li.assistant[data-state=done]")
        # The chat's decision came as it was (per-category: every category has a threshold), so every bar has one.
        assert len(page.query_selector_all("#transcript li.assistant .decision .threshold")) == len(tiny_model.categories)
        page.click("#what-if")
        view = page.wait_for_selector("#what-if-result .decision")
        assert view.query_selector_all(".threshold") == []
