// Markdown to DOM nodes for the model's answers: our own small renderer, because model text is untrusted.
// Safety by construction: every node is made with createElement and every piece of model text becomes a text node
// (no innerHTML, so HTML in an answer shows as text); links as markdown-inline.js allows them; nesting past
// MARKDOWN_DEPTH shows as text, so recursion is bounded and 10,000-deep input neither overflows the stack nor
// indents off the screen. Every search is linear or memoized (see `finder`), so re-rendering the whole answer on
// each frame while it streams stays cheap.
"use strict";

const MARKDOWN_DEPTH = 10;

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
