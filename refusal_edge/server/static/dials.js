// The dials page: a chat whose every turn shows its refusal decision, and the policy dials that shape the next.
// Plain browser JavaScript against the server's own API; nothing to build, nothing fetched from elsewhere. This file
// holds the API, the dials and the decision bars; chat.js the conversation, markdown.js the answers' rendering.
"use strict";

const KEY_STORE = "refusal-edge-api-key";
const $ = (id) => document.getElementById(id);
const state = {card: null, names: new Map(), history: [], lastPrompt: null, busy: false, whatIfTimer: null,
  controller: null, conversation: 0, follow: true};
// Category names come from the model and can be any string ("constructor", "__proto__"): read tables by own key only.
const own = (table, key) => (table && Object.hasOwn(table, key) ? table[key] : undefined);

// --- the API ---------------------------------------------------------------------------------------------
async function api(path, body, signal) {
  const headers = {"Content-Type": "application/json"};
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = body === undefined ? {headers, signal} : {method: "POST", headers, body: JSON.stringify(body), signal};
  const response = await fetch(path, init);
  if (response.status === 401) {
    await askForKey();
    return api(path, body, signal);
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  try {
    const error = (await response.json()).error;
    return typeof error === "string" ? error : error.message;
  } catch (_) {
    return `HTTP ${response.status}`;
  }
}

function askForKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-form").onsubmit = () => {
      localStorage.setItem(KEY_STORE, $("key").value.trim());
      $("forget-key").hidden = false;
      resolve();
    };
    if (!dialog.open) dialog.showModal();
    $("key").focus();
  });
}

// --- the dials -------------------------------------------------------------------------------------------
// One short name per category, the server's (the same function names them in the CLI's decision lines).
const shortName = (name) => state.names.get(name) ?? name;
const categories = () => state.card.refusal.categories;
const respondToken = () => state.card.refusal.respond_token;  // the model's own, e.g. "[respond]"

function buildDials() {
  const thresholds = $("thresholds");
  const biases = $("biases");
  thresholds.replaceChildren();
  biases.replaceChildren();
  categories().forEach((name, i) => {
    const row = element("div", {className: "row"});
    const id = `threshold-${i}`;
    row.append(element("label", {htmlFor: id, textContent: shortName(name), title: name}),
      element("input", {type: "range", id, min: 0, max: 1, step: 0.01, dataset: {category: name},
        ariaLabel: `Threshold for ${shortName(name)} (${name})`}),
      element("output", {id: `${id}-value`}));
    thresholds.append(row);
  });
  ["respond", ...categories()].forEach((name, i) => {
    const id = `bias-${i}`;
    biases.append(element("label", {htmlFor: id, textContent: name === "respond" ? respondToken() : shortName(name), title: name}),
      element("input", {type: "number", id, step: 0.5, dataset: {token: name},
        ariaLabel: `Logit bias for ${name === "respond" ? respondToken() : `${shortName(name)} (${name})`}`}));
  });
  for (const input of document.querySelectorAll("#dials input, #dials select")) {
    if (input.id !== "load" && input.id !== "max-tokens") input.addEventListener("input", dialsChanged);
  }
}

// The rules and what each does are the server's (its rule registry, through the model card).
const rules = () => state.card.refusal.rules;

function buildRules() {
  $("rule").replaceChildren(...Object.keys(rules()).map((name) => element("option", {value: name, textContent: name})));
}

function showPolicy(policy) {
  $("rule").value = policy.rule;
  $("threshold").value = policy.threshold;
  $("temperature").value = policy.temperature;
  for (const input of document.querySelectorAll("#thresholds input")) {
    input.value = own(policy.thresholds, input.dataset.category) ?? policy.threshold;
  }
  for (const input of document.querySelectorAll("#biases input")) {
    input.value = own(policy.biases, input.dataset.token) || 0;
  }
  showValues();
}

function currentPolicy() {  // fromEntries makes own keys even of "__proto__", which assignment would not
  const thresholds = Object.fromEntries([...document.querySelectorAll("#thresholds input")]
    .map((input) => [input.dataset.category, Number(input.value)]));
  const biases = Object.fromEntries([...document.querySelectorAll("#biases input")]
    .filter((input) => Number(input.value)).map((input) => [input.dataset.token, Number(input.value)]));
  return {rule: $("rule").value, threshold: Number($("threshold").value), thresholds, biases,
    temperature: Number($("temperature").value) || 1};
}

function showValues() {
  $("rule-help").textContent = own(rules(), $("rule").value) ?? "";
  $("threshold-value").value = Number($("threshold").value).toFixed(2);
  for (const input of document.querySelectorAll("#thresholds input")) {
    $(`${input.id}-value`).value = Number(input.value).toFixed(2);
  }
}

function dialsChanged() {
  showValues();
  clearTimeout(state.whatIfTimer);
  if (state.lastPrompt) state.whatIfTimer = setTimeout(whatIf, 150);  // live: re-decide as the dials move
}

// --- decisions ---------------------------------------------------------------------------------------------
// Which threshold each probability was held to is the decision's own report (thresholds_in_force): the page draws
// it and knows no rule's semantics.
function thresholdOf(decision, name) {
  return own(decision.thresholds_in_force.categories, name) ?? undefined;  // null: no threshold for it
}

function decisionView(decision, label) {  // the verdict on one line; its bars fold away under it
  const policy = decision.policy;
  const total = decision.thresholds_in_force.refusal_probability;
  const view = element("details", {className: "decision", open: true,
    dataset: {token: decision.token, refused: decision.refused}});
  const chosen = decision.refused ? "refuse" : "respond";
  view.append(element("summary", {className: "verdict"},
    element("span", {className: `chip ${chosen}`, textContent: decision.token || "(ordinary text)"}),
    element("span", {className: "muted", textContent: `${label} · ${decision.forced ? "forced" : "model's choice"} · rule ${policy.rule}` +
      ` · prefill ${decision.prefill_ms.toFixed(1)} ms, decision ${decision.decision_ms.toFixed(2)} ms` +
      (own(decision.meta, "answered_by") ? ` · answered by ${own(decision.meta, "answered_by")}` : "")})));
  const rows = [[respondToken(), decision.respond_probability, undefined, !decision.refused && decision.decision_token]];
  for (const [name, p] of Object.entries(decision.probabilities)) {
    rows.push([shortName(name), p, thresholdOf(decision, name), decision.category === name, name]);
  }
  if (total != null) rows.push(["any refusal", decision.refusal_probability, total, decision.refused]);
  for (const [name, p, threshold, isChosen, full] of rows) view.append(bar(name, p, threshold, isChosen, full));
  return view;
}

function bar(name, p, threshold, chosen, full) {
  const track = element("span", {className: "track"}, element("span", {className: "fill", style: {width: `${(100 * p).toFixed(1)}%`}}));
  if (threshold !== undefined) {
    track.append(element("span", {className: "threshold", style: {left: `${(100 * threshold).toFixed(1)}%`},
      title: `threshold ${threshold.toFixed(2)}`}));
  }
  const text = `${name}: ${p.toFixed(3)}` + (threshold === undefined ? "" : `, threshold ${threshold.toFixed(2)}`);
  return element("div", {className: `bar${chosen ? " chosen" : ""}`, role: "img", ariaLabel: text, title: full || name},
    element("span", {className: "name", textContent: name}), track,
    element("span", {className: "value", textContent: p.toFixed(3)}));
}

async function whatIf() {
  if (!state.lastPrompt) {
    status("Send a message first: what-if re-decides the last prompt.");
    return;
  }
  try {
    const reply = await (await api("/v1/refusal/decisions", {input: [state.lastPrompt], refusal: currentPolicy()})).json();
    $("what-if-result").replaceChildren(element("h3", {textContent: "What if: the last prompt at these dials"}),
      decisionView(reply.data[0], "no generation"));
    status("");
  } catch (error) {
    status(error.message, true);
  }
}

// --- start ------------------------------------------------------------------------------------------------
function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "style") Object.assign(node.style, value);  // CSSOM: allowed by the page's CSP, unlike style=""
    else if (name === "role" || name === "title") node.setAttribute(name, value);
    else if (name === "ariaLabel") node.setAttribute("aria-label", value);
    else node[name] = value;
  }
  node.append(...children);
  return node;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function start() {
  startChat();
  $("what-if").addEventListener("click", whatIf);
  $("reset").addEventListener("click", () => { showPolicy(state.card.refusal.policy); dialsChanged(); });
  $("save").addEventListener("click", save);
  $("load").addEventListener("change", load);
  $("forget-key").addEventListener("click", () => { localStorage.removeItem(KEY_STORE); location.reload(); });
  $("forget-key").hidden = !localStorage.getItem(KEY_STORE);
  try {
    state.card = (await (await api("/v1/models")).json()).data[0];
  } catch (error) {
    status(`Cannot reach the server: ${error.message}`, true);
    return;
  }
  state.names = new Map(Object.entries(state.card.refusal.short_names || {}));
  $("model").textContent = `${state.card.id} · ${categories().length} refusal categories`;
  buildRules();
  buildDials();
  showPolicy(state.card.refusal.policy);
  document.body.dataset.ready = "true";
  $("prompt").focus();
}

start();
