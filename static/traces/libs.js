// Markdown and highlighted code, with the libraries behind them (markup.js: markdown-it,
// DOMPurify, highlight.js) fetched and parsed only when a page first shows some, so a page draws
// before they are loaded. Until then the text is shown as plain text (textContent); their output
// only ever reaches the page as markup.js's sanitized DOM fragments.
let markup = null;  // the module, once loaded
let loading = null;

function load() {
  loading ||= import("./markup.js").then((module) => { markup = module; return module; });
  return loading;
}

// Fills `node` by `fill(markup)`: at once if the libraries are here, else with `text` as plain
// text until they are.
function filled(node, text, fill) {
  if (markup) { node.replaceChildren(fill(markup)); return node; }
  node.textContent = text;
  load().then((module) => node.replaceChildren(fill(module)));
  return node;
}

// `node` with the rendered markdown in it.
export function markdownInto(node, text) {
  const source = String(text ?? "");
  return filled(node, source, (module) => module.markdownFragment(source));
}

// `node` with the code in it, coloured by highlight.js (plain text for other languages).
export function codeInto(node, code, language) {
  const source = String(code ?? "");
  return filled(node, source, (module) => module.codeFragment(source, language));
}
