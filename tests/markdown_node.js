// Runs the dials page's Markdown renderer (static/markdown.js + markdown-inline.js) in node, on a minimal DOM, and
// prints the CPU milliseconds each case took as JSON: {"name": ms, ...}. Usage: node markdown_node.js STATIC CASES
// where CASES is a JSON file {"name": "markdown source", ...}. CPU time, not wall time: the machine may be busy.
"use strict";
const fs = require("fs");
const path = require("path");

class FakeNode {
  constructor(tag) { this.tag = tag; this.children = null; this.text = ""; }
  get style() { return this._style || (this._style = {}); }
  append(...nodes) { (this.children || (this.children = [])).push(...nodes); }
  set textContent(text) { this.text = text; this.children = null; }
  get textContent() {
    return this.text + (this.children || []).map((c) => (typeof c === "string" ? c : c.textContent)).join("");
  }
  setAttribute(name, value) { (this.attrs || (this.attrs = {}))[name] = value; }
}
globalThis.document = {createElement: (tag) => new FakeNode(tag), createDocumentFragment: () => new FakeNode("#")};

const [staticDir, casesFile] = process.argv.slice(2);
const source = ["markdown.js", "markdown-inline.js"].map((f) => fs.readFileSync(path.join(staticDir, f), "utf8"));
const renderMarkdown = new Function(source.join("\n") + "\nreturn renderMarkdown;")();
const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
const out = {};
for (const [name, text] of Object.entries(cases)) {
  const before = process.cpuUsage();
  const rendered = renderMarkdown(text);
  const used = process.cpuUsage(before);
  if (text.length && !rendered.children) throw new Error(`${name}: nothing rendered`);
  out[name] = (used.user + used.system) / 1e3;
}
console.log(JSON.stringify(out));
