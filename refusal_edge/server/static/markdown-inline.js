// Markdown's inline part for markdown.js: code spans, emphasis, links, entities, each piece of model text a text
// node. Links only to http:, https: and mailto: URLs as the browser itself parses them.
"use strict";

const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const ENTITIES = {amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0", copy: "\u00a9", reg: "\u00ae",
  mdash: "\u2014", ndash: "\u2013", hellip: "\u2026", laquo: "\u00ab", raquo: "\u00bb", times: "\u00d7"};
const PUNCTUATION = "\\`*_{}[]()#+-.!|~<>&\"'";

function finder(text) {
  // The next position >= from where `needle` occurs and `accept` (a property of that position alone) holds. Each
  // key keeps its last answer: a later search starting at or before that answer (or after a failed search's start)
  // reuses it, so many openers without a closer cost one scan in all, not one each.
  const memo = new Map();
  const find = (key, needle, from, accept = () => true) => {
    const last = memo.get(key);
    if (last && last.from <= from && (last.at < 0 || last.at >= from)) return last.at;
    let at = text.indexOf(needle, from);
    while (at >= 0 && !accept(at)) at = text.indexOf(needle, at + 1);
    memo.set(key, {from, at});
    return at;
  };
  // Code spans: every run of backticks, indexed once by its length, so that finding the closing run of each
  // opening one is a cursor moving forward (`a``b```c... with runs of every length stays linear).
  let runs = null;
  const cursors = new Map();
  find.closingRun = (length, from) => {
    if (!runs) {
      runs = new Map();
      for (let at = text.indexOf("`"); at >= 0; at = text.indexOf("`", at)) {
        const n = runLength(text, at);
        if (!runs.has(n)) runs.set(n, []);
        runs.get(n).push(at);
        at += n;
      }
    }
    const starts = runs.get(length) || [];
    let k = cursors.get(length) || 0;
    while (k < starts.length && starts[k] < from) k++;
    cursors.set(length, k);
    return k < starts.length ? starts[k] : -1;
  };
  find.lastOpening = (close) => {  // the last "[" before a "]", once per "]"
    if (!memo.has(`[${close}`)) memo.set(`[${close}`, text.lastIndexOf("[", close));
    return memo.get(`[${close}`);
  };
  return find;
}

function renderInline(text, depth, parent, inLink = false) {
  SPECIAL.lastIndex = 0;
  if (!SPECIAL.test(text)) {  // nothing but text (most list items and table cells): no search machinery
    if (text) parent.append(decodeEntities(text));
    return;
  }
  const find = finder(text);
  // Plain text is kept as ranges of `text` (from `from` to the current position) plus escaped characters, and
  // joined once per text node: no string grows one character at a time.
  let parts = [];
  let from = 0;
  let i = 0;
  const flush = () => {
    if (i > from) parts.push(text.slice(from, i));
    if (parts.length) parent.append(decodeEntities(parts.join("")));
    parts = [];
  };
  const nested = (tag, content, className) => {
    flush();
    const made = node(tag, className);
    if (depth + 1 >= MARKDOWN_DEPTH) made.textContent = decodeEntities(content);
    else renderInline(content, depth + 1, made, inLink);
    parent.append(made);
  };
  let found;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && PUNCTUATION.includes(text[i + 1])) {
      if (i > from) parts.push(text.slice(from, i));
      parts.push(text[i + 1]);
      i += 2;
      from = i;
    } else if (c === "`") {
      const run = runLength(text, i);
      const close = find.closingRun(run, i + run);
      if (close < 0) {
        i += run;  // no closing run: the ticks are text
        continue;
      }
      flush();
      const code = node("code");
      const content = text.slice(i + run, close).replace(/\n/g, " ");
      const padded = content.length > 2 && content[0] === " " && content[content.length - 1] === " " && content.trim();
      code.textContent = padded ? content.slice(1, -1) : content;
      parent.append(code);
      i = from = close + run;
    } else if (c === "*" || c === "_" || c === "~") {
      const done = emphasis(text, i, find, nested);
      if (done > i) i = from = done;
      else i++;
    } else if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const done = inLink ? -1 : link(text, c === "!" ? i + 1 : i, depth, find, parent, flush);
      if (done > i) i = from = done;
      else i++;
    } else if (!inLink && (c === "<" || c === "h") && (found = autolink(text, i))) {
      flush();
      parent.append(anchor(found[1], found[2]));
      i = from = i + found[0].length;
    } else {  // plain text up to the next character that could start something
      SPECIAL.lastIndex = i + 1;
      i = SPECIAL.exec(text) ? SPECIAL.lastIndex - 1 : text.length;
    }
  }
  flush();
}

const SPECIAL = /[\\`*_~[!<h]/g;  // what the loop above treats specially

function runLength(text, i) {
  let end = i;
  while (text[end] === text[i]) end++;
  return end - i;
}

const WORD = /[\p{L}\p{N}]/u;

function emphasis(text, i, find, nested) {  // the index after the closing delimiter, or i when this is no opener
  const c = text[i];
  const run = runLength(text, i);
  const size = c === "~" ? (run >= 2 ? 2 : 0) : Math.min(run, 2);
  if (!size || !text[i + size] || /\s/.test(text[i + size])) return i;
  if (c === "_" && i > 0 && WORD.test(text[i - 1])) return i;  // snake_case is not emphasis
  const delimiter = c.repeat(size);
  let close = find(`emphasis${delimiter}`, delimiter, i + size + 1, (at) =>
    !/\s/.test(text[at - 1]) && !(c === "_" && at + size < text.length && WORD.test(text[at + size])) &&
    (size === 2 || text[at - 1] !== c && runLength(text, at) !== 2));  // `*a **b** c*`: ** does not close *
  if (close < 0) return i;
  while (text[close + size] === c) close++;  // `***a***`: the last two close the strong, the first one the em
  nested(c === "~" ? "del" : size === 2 ? "strong" : "em", text.slice(i + size, close));
  return close + size;
}

function link(text, i, depth, find, parent, flush) {
  const close = find("]", "]", i + 1);
  if (close < 0 || text[close + 1] !== "(" || find.lastOpening(close) !== i) return i;
  const end = find(")", ")", close + 2);
  if (end < 0) return i;
  const target = text.slice(close + 2, end).trim().split(/\s+/)[0].replace(/^<(.*)>$/, "$1");
  const href = safeHref(target);
  if (!href) return i;  // the caller shows the whole link as the text it is
  flush();
  const made = anchor(href, "");
  renderInline(text.slice(i + 1, close), Math.min(depth + 1, MARKDOWN_DEPTH), made, true);
  if (!made.textContent) made.textContent = href;
  parent.append(made);
  return end + 1;
}

// Bounded and without brackets or quotes, so that a failed match costs little and "(https://x)" links just x.
const AUTOLINK = /<((?:https?|mailto):[^\s<>]{1,2048})>|https?:\/\/[^\s<>()[\]{}"'`]{0,2048}[^\s<>()[\]{}"'`.,;:!?*_~]/y;

function autolink(text, i) {  // [source, href, shown] for <scheme:...> or a bare http(s) URL at i
  if (text[i] === "h" && i > 0 && WORD.test(text[i - 1])) return null;
  AUTOLINK.lastIndex = i;
  const match = AUTOLINK.exec(text);
  const href = match && safeHref(match[1] || match[0]);
  return href ? [match[0], href, match[1] || match[0]] : null;
}

function safeHref(target) {  // the URL as the browser reads it, if its scheme is one we allow; else null
  const decoded = decodeEntities(target);
  if (!decoded.includes(":")) return null;  // relative: no scheme (and no exception thrown per link)
  try {
    const url = new URL(decoded);
    return LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch (_) {
    return null;  // relative or malformed: there is no page of the model's to be relative to
  }
}

function anchor(href, text) {
  const made = node("a");
  made.href = href;
  made.rel = "noopener noreferrer";
  made.target = "_blank";
  made.textContent = text;
  return made;
}

function decodeEntities(text) {  // to text, never to markup: "&lt;script&gt;" shows as <script>, inert
  return text.replace(/&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});/g, (entity, body) => {
    if (body[0] !== "#") return Object.hasOwn(ENTITIES, body) ? ENTITIES[body] : entity;
    const point = body[1] === "x" || body[1] === "X" ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
    const valid = point > 0 && point <= 0x10ffff && !(point >= 0xd800 && point <= 0xdfff);
    return valid ? String.fromCodePoint(point) : "\ufffd";
  });
}
