// Markdown to DOM nodes for the model's answers: our own small renderer, because model text is untrusted.
// Safety by construction: every node is made with createElement and every piece of model text becomes a text node
// (no innerHTML, so HTML in an answer shows as text); links only to http:, https: and mailto: URLs as the browser
// itself parses them; nesting past MARKDOWN_DEPTH shows as text, so recursion is bounded and 10,000-deep input
// neither overflows the stack nor indents off the screen. Every search memoizes its result (see `finder`): the
// work stays linear in the answer's length, so re-rendering the whole answer on each frame while it streams is cheap.
"use strict";

const MARKDOWN_DEPTH = 10;
const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const ENTITIES = {amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0", copy: "\u00a9", reg: "\u00ae",
  mdash: "\u2014", ndash: "\u2013", hellip: "\u2026", laquo: "\u00ab", raquo: "\u00bb", times: "\u00d7"};
const PUNCTUATION = "\\`*_{}[]()#+-.!|~<>&\"'";

function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"), 0, fragment);
  return fragment;
}

function node(tag, className) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  return made;
}

// --- blocks: headings, rules, fenced code, quotes, lists, tables, paragraphs ------------------------------------
const FENCE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]|$)/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])(?:[ \t]+|$)/;

function renderBlocks(lines, depth, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
    } else if (FENCE.test(line)) {
      i = codeBlock(lines, i, parent);
    } else if (HEADING.test(line)) {
      const level = line.match(HEADING)[1].length;
      const heading = node(`h${level}`);
      renderInline(headingText(line.trim().slice(level)), depth, heading);
      parent.append(heading);
      i++;
    } else if (isRule(line)) {
      parent.append(node("hr"));
      i++;
    } else if (depth < MARKDOWN_DEPTH && QUOTE.test(line)) {
      const inner = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) inner.push(lines[i].replace(QUOTE, ""));
      const quote = node("blockquote");
      renderBlocks(inner, depth + 1, quote);
      parent.append(quote);
    } else if (depth < MARKDOWN_DEPTH && LIST_ITEM.test(line)) {
      i = list(lines, i, depth, parent);
    } else if (isTableStart(lines, i)) {
      i = table(lines, i, depth, parent);
    } else {
      const start = i;
      for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines[i], depth) && !isTableStart(lines, i); i++);
      const paragraph = node("p");
      renderInline(lines.slice(start, i).map((l) => l.trim()).join("\n"), depth, paragraph);
      parent.append(paragraph);
    }
  }
}

function headingText(text) {  // without a closing run of #s (loops, not a regex: no backtracking on long lines)
  let end = text.trimEnd().length;
  while (end > 0 && text[end - 1] === "#") end--;
  return (end === 0 || text[end - 1] === " " || text[end - 1] === "\t" ? text.slice(0, end) : text).trim();
}

function startsBlock(line, depth) {
  return FENCE.test(line) || HEADING.test(line) || isRule(line) ||
    (depth < MARKDOWN_DEPTH && (QUOTE.test(line) || LIST_ITEM.test(line)));
}

function isRule(line) {  // three or more of one of - * _, spaces allowed between
  const compact = line.replace(/[ \t]/g, "");
  return line.search(/\S/) < 4 && compact.length >= 3 && /^(?:-+|\*+|_+)$/.test(compact);
}

function indentOf(line) {  // columns, a tab counting four
  let columns = 0;
  for (const c of line) {
    if (c === " ") columns++;
    else if (c === "\t") columns += 4;
    else break;
  }
  return columns;
}

function dedent(line, columns) {
  let i = 0;
  for (let removed = 0; i < line.length && removed < columns; i++) {
    if (line[i] === " ") removed++;
    else if (line[i] === "\t") removed += 4;
    else break;
  }
  return line.slice(i);
}

function codeBlock(lines, i, parent) {
  const [, indent, fence, language] = lines[i].match(FENCE);
  const code = [];
  for (i++; i < lines.length; i++) {
    const closing = lines[i].trim();
    if (closing.length >= fence.length && closing === fence[0].repeat(closing.length) && indentOf(lines[i]) < 4) {
      i++;
      break;
    }
    code.push(dedent(lines[i], indent.length));
  }  // an unclosed fence runs to the end: while an answer streams, its code block is still open
  const box = node("div", "code");
  const bar = node("div", "code-bar");
  const label = node("span");
  label.textContent = language || "code";
  const copy = node("button", "copy-code");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", "Copy code");
  bar.append(label, copy);
  const pre = node("pre");
  const body = node("code");
  body.textContent = code.join("\n");
  pre.append(body);
  box.append(bar, pre);
  parent.append(box);
  return i;
}

function list(lines, i, depth, parent) {
  const first = lines[i].match(LIST_ITEM);
  const ordered = /\d/.test(first[2]);
  const base = indentOf(first[1]);
  const container = node(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) container.start = parseInt(first[2], 10);
  while (i < lines.length) {
    const marker = lines[i].match(LIST_ITEM);
    if (!marker || indentOf(marker[1]) !== base || /\d/.test(marker[2]) !== ordered) break;
    const content = Math.min(marker[0].length, marker[1].length + marker[2].length + 1);
    const item = [lines[i].slice(marker[0].length)];
    for (i++; i < lines.length; i++) {
      const line = lines[i];
      if (!line.trim()) {  // blank lines end the item unless what follows is indented under it
        let next = i;
        while (next < lines.length && !lines[next].trim()) next++;
        if (next === lines.length || indentOf(lines[next]) <= base) break;
        for (; i < next; i++) item.push("");
        i--;
      } else if (indentOf(line) > base) {
        item.push(dedent(line, Math.min(indentOf(line), content)));
      } else if (!LIST_ITEM.test(line) && !startsBlock(line, depth) && item[item.length - 1].trim()) {
        item.push(line);  // a lazy continuation of the item's paragraph
      } else {
        break;
      }
    }
    const li = node("li");
    renderBlocks(item, depth + 1, li);
    container.append(li);
    while (i < lines.length && !lines[i].trim()) i++;
  }
  parent.append(container);
  return i;
}

function cells(line) {  // a table row: cells split at unescaped pipes, the outer pipes optional
  const row = line.trim().replace(/^\|/, "").replace(/(^|[^\\])\|$/, "$1");
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

function isTableStart(lines, i) {
  if (i + 1 >= lines.length || !lines[i].includes("|") || !lines[i + 1].includes("-")) return false;
  const delimiter = cells(lines[i + 1]);
  return delimiter.length === cells(lines[i]).length && delimiter.every((cell) => /^:?-+:?$/.test(cell));
}

function table(lines, i, depth, parent) {
  const header = cells(lines[i]);
  const align = cells(lines[i + 1]).map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : ""));
  const box = node("div", "table");  // scrolls sideways by itself rather than widening the page
  const grid = node("table");
  const head = node("thead");
  const body = node("tbody");
  head.append(tableRow(header, "th", align, depth));
  for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) {
    body.append(tableRow(cells(lines[i]), "td", align, depth));
  }
  grid.append(head, body);
  box.append(grid);
  parent.append(box);
  return i;
}

function tableRow(values, tag, align, depth) {
  const row = node("tr");
  align.forEach((side, column) => {
    const cell = node(tag);
    if (side) cell.style.textAlign = side;  // CSSOM, allowed by the page's CSP
    renderInline(values[column] || "", depth, cell);
    row.append(cell);
  });
  return row;
}

// --- inline: code spans, emphasis, links ----------------------------------------------------------------------
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
  find.lastOpening = (close) => {  // the last "[" before a "]", once per "]"
    if (!memo.has(`[${close}`)) memo.set(`[${close}`, text.lastIndexOf("[", close));
    return memo.get(`[${close}`);
  };
  return find;
}

function renderInline(text, depth, parent, inLink = false) {
  const find = finder(text);
  let plain = "";
  const flush = () => {
    if (plain) parent.append(decodeEntities(plain));
    plain = "";
  };
  const nested = (tag, content, className) => {
    flush();
    const made = node(tag, className);
    if (depth + 1 >= MARKDOWN_DEPTH) made.textContent = decodeEntities(content);
    else renderInline(content, depth + 1, made, inLink);
    parent.append(made);
  };
  let i = 0;
  let found;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && PUNCTUATION.includes(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
    } else if (c === "`") {
      const run = runLength(text, i);
      const ticks = "`".repeat(run);
      const close = find(`code${run}`, ticks, i + run, (at) => text[at - 1] !== "`" && text[at + run] !== "`");
      if (close < 0) {
        plain += ticks;
        i += run;
        continue;
      }
      flush();
      const code = node("code");
      const content = text.slice(i + run, close).replace(/\n/g, " ");
      const padded = content.length > 2 && content[0] === " " && content[content.length - 1] === " " && content.trim();
      code.textContent = padded ? content.slice(1, -1) : content;
      parent.append(code);
      i = close + run;
    } else if (c === "*" || c === "_" || c === "~") {
      const done = emphasis(text, i, find, nested);
      if (done > i) i = done;
      else {
        plain += c;
        i++;
      }
    } else if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const done = inLink ? -1 : link(text, c === "!" ? i + 1 : i, depth, find, parent, flush);
      if (done > i) i = done;
      else {
        plain += c;
        i++;
      }
    } else if (!inLink && (c === "<" || c === "h") && (found = autolink(text, i))) {
      flush();
      parent.append(anchor(found[1], found[2]));
      i += found[0].length;
    } else {
      plain += c;
      i++;
    }
  }
  flush();
}

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
  try {
    const url = new URL(decodeEntities(target));
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
