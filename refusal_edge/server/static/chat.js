// The conversation of the dials page: send, stream the answer in as Markdown, follow it unless the reader scrolled
// up, stop it (button or Esc) keeping what arrived, copy answers and code, start over, go on past the context.
// Uses dials.js's state and helpers and markdown.js's renderMarkdown; dials.js, loaded last, calls startChat().
"use strict";

const FOLLOW_SLACK = 48;  // px from the bottom that still count as "at the latest"
const answers = new WeakMap();  // a turn's <li> -> the answer's Markdown source, for the copy button
// The model's window over a long conversation: the server leaves out the oldest turns that no longer fit
// (truncation "auto") and says how many (refusal.meta.dropped_turns). Every turn stays on screen, with one marker
// where the model's view begins; the page sends only from there on, so the cut never moves back and neither the
// request nor its message count grows without end.
const cut = {items: [], dropped: 0};  // the user <li> of every turn in state.history; how many the model lost

function startChat() {
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.busy && !$("key-dialog").open) {
      event.preventDefault();
      stop();
    }
  });
  $("new-chat").addEventListener("click", newConversation);
  $("toggle-dials").addEventListener("click", () => {
    const open = document.body.classList.toggle("dials-open");
    $("toggle-dials").setAttribute("aria-expanded", String(open));
    $("toggle-dials").textContent = open ? "Chat" : "Dials";
  });
  $("transcript").addEventListener("scroll", () => {
    state.follow = atLatest();  // a scroll the page makes itself lands at the bottom, so only the reader's unsticks
    showJump();
  }, {passive: true});
  $("jump").addEventListener("click", () => {
    state.follow = true;
    keepUp();
  });
  $("transcript").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (button && button.classList.contains("copy-code")) copy(button.closest(".code").querySelector("code").textContent, button);
    if (button && button.classList.contains("copy-answer")) copy(answers.get(button.closest("li")) || "", button);
  });
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.busy) return;
  const conversation = state.conversation;
  const controller = new AbortController();
  busy(controller);
  const message = {role: "user", content: text};
  const messages = [...windowOf(state.history, cut.dropped), message];
  const label = `turn ${state.history.filter((m) => m.role === "user").length + 1}`;
  let dropped = 0;  // of the turns sent, how many the model did not see
  for (const open of document.querySelectorAll("#transcript details.decision[open]")) open.open = false;
  state.follow = true;  // sending is a wish to see the answer
  const asked = turn("user");
  asked.append(element("p", {textContent: text}));
  const view = {item: turn("assistant"), body: element("div", {className: "answer md"}), text: "", frame: 0, timer: 0,
    next: 0};
  view.item.dataset.state = "waiting";
  view.item.setAttribute("aria-busy", "true");  // screen readers wait for the whole answer, not every token
  view.item.append(view.body);
  let reply = null;
  try {
    const request = {messages, stream: true, refusal: currentPolicy(), truncation: "auto"};
    if ($("max-tokens").value) request.max_tokens = Number($("max-tokens").value);  // else the server's --max-tokens
    const response = await api("/v1/chat/completions", request, controller.signal);
    $("prompt").value = "";
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.refusal) {
        view.item.prepend(decisionView(chunk.refusal, label));
        dropped = Number(own(chunk.refusal.meta, "dropped_turns")) || 0;
        showCut(cut.dropped + dropped, asked);
        reply = {role: "assistant", ...chunk.choices[0].delta, content: ""};
        view.item.dataset.state = "streaming";
      }
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (delta) {
        reply = reply || {role: "assistant", content: ""};
        view.text = reply.content += delta;
        paintSoon(view);
      }
    }
    finish(view, "done");
  } catch (error) {
    if (error.name === "AbortError") {
      finish(view, "stopped");
      status(reply ? "Stopped: the answer keeps what had arrived." : "Stopped before the answer began.");
    } else {
      finish(view, "error");
      view.item.append(element("p", {className: "error", textContent: error.message}));
      status(error.message, true);
      reply = null;
    }
  } finally {
    if (state.conversation === conversation) {  // not if "New chat" was pressed meanwhile
      if (reply) {
        state.history = [...state.history, message, reply];
        state.lastPrompt = windowOf(messages, dropped);  // what-if re-decides what the model saw
        cut.items.push(asked);
        cut.dropped += dropped;
        $("what-if-result").replaceChildren();  // it was about the previous prompt
        if (view.item.dataset.state === "done") status("");
      }
      showCut(cut.dropped);  // back where it was if this turn did not make it into the conversation
      busy(null);
      $("prompt").focus();
    }
  }
}

function busy(controller) {
  state.controller = controller;
  state.busy = Boolean(controller);
  $("send").hidden = state.busy;
  $("stop").hidden = !state.busy;
}

function stop() {
  if (state.controller) state.controller.abort();  // the server sees the hang-up and stops generating
}

function newConversation() {
  stop();
  state.conversation++;
  busy(null);
  state.history = [];
  state.lastPrompt = null;
  cut.items = [];
  cut.dropped = 0;
  state.follow = true;
  $("transcript").replaceChildren();
  $("what-if-result").replaceChildren();
  showJump();
  status("");
  $("prompt").focus();
}

function windowOf(messages, dropped) {  // the messages but their first `dropped` turns (the page sends no system prompt)
  let turns = 0;
  return messages.filter((m) => (turns += m.role === "user") > dropped);
}

function showCut(dropped, current) {  // the one marker, before the first turn the model still sees
  const marker = document.querySelector("#transcript > li.cut") || element("li", {className: "cut", role: "separator"});
  const first = cut.items[dropped] || current;
  if (!dropped || !first) {
    marker.remove();
    return;
  }
  marker.textContent = `${dropped} earlier turn${dropped === 1 ? "" : "s"} left out to fit the model's context`;
  marker.title = "The model no longer sees the turns above this line; they stay here for you.";
  first.before(marker);
}

async function* events(response) {  // server-sent events -> parsed chunks
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, end).replace(/^data: /, "");
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// --- the answer on screen: re-rendered whole, at most once a frame while it streams, and less often when long ----
function paintSoon(view) {
  if (view.frame || view.timer) return;
  const wait = view.next - performance.now();  // a long answer spends at most a quarter of the time rendering
  if (wait <= 0) view.frame = requestAnimationFrame(() => paint(view));
  else view.timer = setTimeout(() => { view.timer = 0; paintSoon(view); }, wait);
}

function paint(view) {
  const begun = performance.now();
  view.frame = 0;
  view.body.replaceChildren(renderMarkdown(view.text));
  keepUp();
  view.next = performance.now() + 3 * (performance.now() - begun);
}

function finish(view, how) {
  clearTimeout(view.timer);
  cancelAnimationFrame(view.frame);
  view.timer = 0;
  paint(view);
  view.item.dataset.state = how;
  view.item.removeAttribute("aria-busy");
  if (how === "error") return;
  answers.set(view.item, view.text);
  const tools = element("div", {className: "turn-tools"});
  if (how === "stopped") tools.append(element("span", {className: "stopped", textContent: "stopped"}));
  if (view.text) tools.append(element("button", {type: "button", className: "copy-answer", textContent: "Copy",
    title: "Copy this answer's Markdown"}));
  view.item.append(tools);
  keepUp();
}

function turn(role) {
  const item = element("li", {className: role});
  $("transcript").append(item);
  keepUp();
  return item;
}

function atLatest() {
  const view = $("transcript");
  return view.scrollHeight - view.scrollTop - view.clientHeight <= FOLLOW_SLACK;
}

function keepUp() {
  if (state.follow) $("transcript").scrollTop = $("transcript").scrollHeight;
  showJump();
}

function showJump() {
  $("jump").hidden = state.follow || atLatest();
}

// --- copying: the Clipboard API where the page is a secure context (localhost, https), else the older way -------
async function copy(text, button) {
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else copyBySelection(text);  // a phone on the LAN over plain http
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  } catch (error) {
    status(`Could not copy: ${error.message}`, true);
  }
}

function copyBySelection(text) {
  const area = element("textarea", {value: text, readOnly: true, className: "offscreen"});
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("the browser refused");
}
