"""The dials page's Markdown renderer (static/markdown.js) in a real Chromium, on known and hostile input.

The hostile cases run with the page's Content-Security-Policy bypassed, so that the CSP cannot hide a renderer
that builds script-bearing markup: a positive control shows that markup inserted as HTML does run there, and the
renderer's output must run nothing (a flag any injected script would set stays unset, no dialog opens), contain
no element or attribute that could, link only to http/https/mailto, and not break the page's layout."""

import pytest

from test_server import server  # noqa: F401 (fixture)
from test_server_ui import LAPTOP, browser, dials_page  # noqa: F401 (fixture)

# Renders `source` into a turn of the transcript, as an answer is shown, and reports on what came out.
RENDER = """(source) => {
  const item = document.createElement("li");
  item.className = "assistant test-render";
  const answer = document.createElement("div");
  answer.className = "answer md";
  answer.append(renderMarkdown(source));
  item.append(answer);
  document.getElementById("transcript").append(item);
  let depth = 0;
  const elements = [...answer.querySelectorAll("*")];
  for (const el of elements) {
    let d = 0;
    for (let up = el; up !== answer; up = up.parentElement) d++;
    depth = Math.max(depth, d);
  }
  const transcript = document.getElementById("transcript").getBoundingClientRect();
  return {
    tags: [...new Set(elements.map((el) => el.tagName.toLowerCase()))],
    handlers: elements.flatMap((el) => [...el.attributes].map((a) => a.name)).filter((n) => /^on/i.test(n)),
    hrefs: [...answer.querySelectorAll("a")].map((a) => ({href: a.href, protocol: a.protocol, rel: a.rel,
                                                          target: a.target})),
    text: answer.textContent,
    depth,
    itemRight: item.getBoundingClientRect().right,
    transcriptRight: transcript.right,
    pageWidth: document.documentElement.scrollWidth,
    viewWidth: window.innerWidth,
  };
}"""
FLAG = "() => window.__pwned === undefined && window.parent.__pwned === undefined"
SAFE_TAGS = {"p", "strong", "em", "del", "code", "pre", "div", "span", "button", "a", "ul", "ol", "li", "blockquote",
             "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td"}
HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 1">',
    '<svg onload="window.__pwned = 1"></svg>',
    '<details open ontoggle="window.__pwned = 1">x</details>',
    '<iframe srcdoc="<script>parent.__pwned = 1</script>"></iframe>',
    '<a href="javascript:window.__pwned = 1">click</a>',
    "<style>body { display: none }</style>",
    "[click](javascript:window.__pwned=1)",
    "[click](JaVaScRiPt:window.__pwned=1)",
    "[click]( javascript:window.__pwned=1 )",
    "[click](java&#115;cript:window.__pwned=1)",
    "[click](java\tscript:window.__pwned=1)",
    "[click](data:text/html,<script>window.__pwned=1</script>)",
    "[click](vbscript:msgbox(1))",
    "[click](//evil.example/x)",
    "<javascript:window.__pwned=1>",
    "![x](javascript:window.__pwned=1)",
    "**[bold](javascript:window.__pwned=1)**",
    "&lt;script&gt;window.__pwned = 1&lt;/script&gt;",
    "&#60;img src=x onerror=window.__pwned=1&#62;",
    "```html\n<script>window.__pwned = 1</script>\n```",
    "`<img src=x onerror=window.__pwned=1>`",
    "| <b onmouseover=window.__pwned=1>x</b> | y |\n|---|---|\n| <script>window.__pwned=1</script> | z |",
    "- <img src=x onerror=window.__pwned=1>\n  > <script>window.__pwned=1</script>",
]
N = 10_000
DEEP = {
    "quotes": "> " * N + "deep",
    "quote marks": ">" * N + "deep",
    "lists": "- " * N + "deep",
    "ordered lists": "1. " * N + "deep",
    "indented lists": "\n".join(" " * (2 * i) + "- deep" for i in range(1_000)),  # ~1 MB: as deep as is sane
    "emphasis": "*" * N + "deep" + "*" * N,
    "strong": "**" * N + "deep" + "**" * N,
    "strike": "~~" * N + "deep" + "~~" * N,
    "links": "[" * N + "deep" + "](https://example.com)" * N,
    "brackets": "[" * N + "deep" + "]" * N,
    "code spans": "`" * N + "deep" + "`" * N,
    "html": "<div>" * N + "deep" + "</div>" * N,
    "mixed": "> - *[" * N + "deep",
    "one long word": "deep" + "x" * N,
}
KNOWN = """## Steps

1. **Create a process** with `fork()`
2. Wait for it:
   - *poll*, or
   - block in `waitpid`
3. Done

```python
print("<b>hi</b>")
```

| name | value |
|------|------:|
| a    | 1     |

> quoted [docs](https://example.com/a?b=1) and <mailto:me@example.com>, see https://example.org.
"""


@pytest.fixture(scope="module")
def bare_page(browser, server):  # noqa: F811
    """The dials page with its CSP bypassed, so that only the renderer stands between model text and the DOM."""
    with dials_page(browser, server.url, bypass_csp=True) as page:
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs
        yield page


def test_the_xss_detector_works_where_the_csp_is_bypassed(bare_page):
    """Positive control: markup inserted as HTML runs its handler here, so a renderer that produced it would fail."""
    bare_page.evaluate("""() => {
      const probe = document.createElement("div");
      probe.innerHTML = '<img src="data:," onerror="window.__probe = 1">';
      document.body.append(probe);
    }""")
    bare_page.wait_for_timeout(200)
    assert bare_page.evaluate("() => window.__probe") == 1


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_markdown_runs_nothing_and_shows_as_text(bare_page, source):
    bare_page.evaluate("() => { delete window.__pwned; }")  # each case on its own
    report = bare_page.evaluate(RENDER, source)
    bare_page.wait_for_timeout(50)  # an error handler or a load would have fired by now
    assert bare_page.evaluate(FLAG), source
    assert bare_page.dialogs == []
    assert set(report["tags"]) <= SAFE_TAGS, report["tags"]
    assert report["handlers"] == []
    for link in report["hrefs"]:
        assert link["protocol"] in ("http:", "https:", "mailto:"), link
        assert (link["rel"], link["target"]) == ("noopener noreferrer", "_blank")
    if "<" in source and "&" not in source:
        assert "<" in report["text"]  # HTML shows as the text it is
    if "](" in source:
        assert "javascript" not in " ".join(link["href"].lower() for link in report["hrefs"])
    assert report["pageWidth"] <= report["viewWidth"]


def test_entities_are_decoded_to_text_never_to_markup(bare_page):
    report = bare_page.evaluate(RENDER, "&lt;script&gt;x&lt;/script&gt; &amp;amp; &#x3C;b&#62; &#0; &bogus;")
    assert report["text"] == "<script>x</script> &amp; <b> \ufffd &bogus;"
    assert set(report["tags"]) == {"p"}


@pytest.mark.parametrize("name", DEEP)
def test_ten_thousand_deep_nesting_neither_overflows_nor_breaks_the_layout(bare_page, name):
    report = bare_page.evaluate(RENDER, DEEP[name])  # a stack overflow would raise here
    assert "deep" in report["text"]
    assert report["depth"] <= 40, report["depth"]  # nesting stops at a fixed depth; the rest shows as text
    assert report["itemRight"] <= report["transcriptRight"] + 1  # the turn stays inside the transcript
    assert report["pageWidth"] <= report["viewWidth"]
    assert bare_page.evaluate(FLAG)


def test_known_markdown_renders_to_the_expected_elements(bare_page):
    bare_page.evaluate(RENDER, KNOWN)
    answer = bare_page.locator(".test-render .answer").last
    assert answer.locator("h2").inner_text() == "Steps"
    assert answer.locator("> ol > li").count() == 3
    assert answer.locator("> ol > li").first.locator("strong").inner_text() == "Create a process"
    assert answer.locator("> ol > li").first.locator("code").inner_text() == "fork()"
    assert answer.locator("> ol > li:nth-child(2) > ul > li").all_inner_texts() == ["poll, or", "block in waitpid"]
    assert answer.locator("> ol > li:nth-child(2) em").inner_text() == "poll"
    assert answer.locator(".code pre code").inner_text() == 'print("<b>hi</b>")'
    assert answer.locator(".code .code-bar span").inner_text() == "python"
    assert answer.locator(".code button.copy-code").count() == 1
    assert answer.locator("table th").all_inner_texts() == ["name", "value"]
    assert answer.locator("table td").all_inner_texts() == ["a", "1"]
    assert answer.locator("table td").last.evaluate("td => td.style.textAlign") == "right"
    links = answer.locator("blockquote a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "https://example.com/a?b=1", "mailto:me@example.com", "https://example.org/"]
    assert links.first.inner_text() == "docs"
    assert answer.locator("blockquote").inner_text().endswith("see https://example.org.")
