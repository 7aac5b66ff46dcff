#!/usr/bin/env node
// Render the math of a built site with KaTeX, in place, so pages need no JavaScript for formulas.
//
// usage: node katex_render.js KATEX_DIR SITE_DIR
//
// pymdownx.arithmatex (generic mode) leaves math as <span class="arithmatex">\(...\)</span> and
// <div class="arithmatex">\[...\]</div> with the TeX HTML-escaped; each such element is replaced
// by KaTeX's HTML+MathML. Prints one JSON line: {"files", "changed", "rendered", "errors": [...]}.
"use strict";

const fs = require("fs");
const path = require("path");

const [katexDir, siteDir] = process.argv.slice(2);
if (!katexDir || !siteDir) {
  process.stderr.write("usage: node katex_render.js KATEX_DIR SITE_DIR\n");
  process.exit(2);
}
const katex = require(path.resolve(katexDir));

// Arithmatex writes no nested tags inside these elements, so a lazy match up to the closing tag
// of the same name is exact.
const MATH = /<(span|div) class="arithmatex">([\s\S]*?)<\/\1>/g;
const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'" };

function unescapeHtml(text) {
  return text.replace(/&(amp|lt|gt|quot|#39);/g, (m) => ENTITIES[m]);
}

// Strip the delimiters arithmatex adds; a bare \begin{env}...\end{env} block has none.
function splitDelimiters(tag, tex) {
  const t = tex.trim();
  if (t.startsWith("\\(") && t.endsWith("\\)")) return [t.slice(2, -2), false];
  if (t.startsWith("\\[") && t.endsWith("\\]")) return [t.slice(2, -2), true];
  return [t, tag === "div"];
}

function* htmlFiles(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* htmlFiles(full);
    else if (entry.isFile() && entry.name.endsWith(".html")) yield full;
  }
}

const report = { files: 0, changed: 0, rendered: 0, errors: [] };
for (const file of htmlFiles(siteDir)) {
  report.files += 1;
  const html = fs.readFileSync(file, "utf8");
  if (!html.includes('class="arithmatex"')) continue;
  const out = html.replace(MATH, (whole, tag, body) => {
    const [tex, displayMode] = splitDelimiters(tag, unescapeHtml(body));
    let rendered;
    try {
      rendered = katex.renderToString(tex, { displayMode, throwOnError: false, output: "htmlAndMathml" });
    } catch (err) {
      // throwOnError=false covers parse errors; anything else (bad macro options) lands here.
      report.errors.push({ file: path.relative(siteDir, file), tex, message: String(err.message || err) });
      return whole;
    }
    if (rendered.includes('class="katex-error"')) {
      const title = /title="([^"]*)"/.exec(rendered);
      report.errors.push({ file: path.relative(siteDir, file), tex, message: title ? unescapeHtml(title[1]) : "KaTeX error" });
    }
    report.rendered += 1;
    return displayMode ? `<div class="arithmatex">${rendered}</div>` : `<span class="arithmatex">${rendered}</span>`;
  });
  if (out !== html) {
    fs.writeFileSync(file, out, "utf8");
    report.changed += 1;
  }
}
process.stdout.write(JSON.stringify(report) + "\n");
