// Policy files for the dials page: save the dials as JSON (what `refusal-edge serve --policy` reads), load JSON or
// the TOML that `refusal-edge calibrate` writes. Uses dials.js's state and helpers, loaded after this file.
"use strict";

function save() {
  const blob = new Blob([JSON.stringify(currentPolicy(), null, 2) + "\n"], {type: "application/json"});
  const link = element("a", {href: URL.createObjectURL(blob), download: "refusal-policy.json"});
  link.click();
  URL.revokeObjectURL(link.href);
}

async function load(event) {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const text = await file.text();
    const policy = file.name.toLowerCase().endsWith(".json") ? JSON.parse(text) : parseToml(text);
    const server = state.card.refusal.policy;
    showPolicy({...server, ...policy, thresholds: {...server.thresholds, ...(policy.thresholds || {})},
      biases: {...(policy.biases || {})}});
    status(`Loaded ${file.name}.`);
    if (state.lastPrompt) await whatIf();
  } catch (error) {
    status(`${file.name}: ${error.message}`, true);
  }
  event.target.value = "";
}

function parseToml(text) {  // the flat subset `refusal-edge` writes: key = value, [thresholds], [biases]
  // Tables without a prototype: a category may be called "__proto__", which must stay a key like any other.
  const policy = Object.create(null);
  let table = policy;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) return;
    const header = line.match(/^\[(thresholds|biases)\]$/);
    if (header) {
      table = policy[header[1]] = Object.create(null);
      return;
    }
    const pair = line.match(/^("(?:[^"\\]|\\.)*"|[\w.-]+)\s*=\s*(.+)$/);
    if (!pair) throw new Error(`line ${i + 1} is not key = value`);
    table[pair[1].startsWith('"') ? JSON.parse(pair[1]) : pair[1]] = JSON.parse(pair[2]);
  });
  return policy;
}
