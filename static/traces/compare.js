// The compare page: each trace's answer rendered from markdown (the same renderer as the live
// and detail pages), in place of the plain text the page shows without script.
import {renderMarkdown} from "./render.js";

const answers = JSON.parse(document.getElementById("compare-answers").textContent);
for (const [side, text] of Object.entries(answers)) {
  const cell = document.querySelector(`[data-compare-answer="${side}"]`);
  if (cell && text) cell.replaceChildren(renderMarkdown(text));
}
