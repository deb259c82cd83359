// The browser libraries the pages use (static/vendor/, copied from the npm registry by
// `make vendor`): markdown-it renders markdown, DOMPurify keeps only safe markup, highlight.js
// colours SQL and JSON. Loaded by libs.js when a page first shows markdown or code. Their HTML
// output only ever reaches the page as a sanitized DOM fragment: nothing here assigns HTML
// strings to the document.
import "../vendor/markdown-it.min.js";
import DOMPurify from "../vendor/purify.es.mjs";
import hljs from "../vendor/highlight/core.min.js";
import sql from "../vendor/highlight/sql.min.js";
import json from "../vendor/highlight/json.min.js";

hljs.registerLanguage("sql", sql);
hljs.registerLanguage("json", json);

function highlighted(code, language) {
  return hljs.getLanguage(language) ? hljs.highlight(code, {language, ignoreIllegals: true}).value : null;
}

// Raw HTML in the text stays text (html: false); links only with safe schemes (markdown-it's
// validateLink), then DOMPurify as a second line.
const markdown = globalThis.markdownit({html: false, linkify: false, breaks: false, typographer: false,
  highlight: (code, language) => highlighted(code, (language || "").toLowerCase()) || ""});

const PURIFY = {RETURN_DOM_FRAGMENT: true, USE_PROFILES: {html: true}, FORBID_TAGS: ["style", "form", "input", "img"],
  FORBID_ATTR: ["style"]};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") { node.setAttribute("rel", "noopener noreferrer nofollow"); node.setAttribute("target", "_blank"); }
});

// A DOM fragment of the rendered markdown.
export function markdownFragment(text) {
  return DOMPurify.sanitize(markdown.render(String(text ?? "")), PURIFY);
}

// A DOM fragment of the code with highlight.js's colouring (plain text for other languages).
export function codeFragment(code, language) {
  const html = highlighted(String(code ?? ""), language);
  if (html === null) return document.createTextNode(String(code ?? ""));
  return DOMPurify.sanitize(html, {RETURN_DOM_FRAGMENT: true, ALLOWED_TAGS: ["span"], ALLOWED_ATTR: ["class"]});
}
