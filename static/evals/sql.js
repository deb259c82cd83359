// The experiment and compare pages: each SQL the page shows as text, coloured by the same
// highlighter as the trace pages (a sanitized fragment, never an HTML string).
import {highlightSql} from "../traces/render.js";

for (const pre of document.querySelectorAll("pre[data-sql]")) {
  const coloured = highlightSql(pre.textContent);
  coloured.dataset.sql = "";
  pre.replaceWith(coloured);
}
