// The dataset page's latest experiment, while it runs: its progress.json every second fills in
// the items done and passing, the experiment's status and, at its end, its accuracy, and each done
// item's verdict as a link to its trace. Text only: everything shown is set as textContent.
const panel = document.querySelector("[data-progress]");
const POLL_MS = 1000;
const field = (name) => panel.querySelector(`[data-progress-${name}]`);
const percent = (value) => (value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)}%`);

function showStatus(badge, status) {
  badge.textContent = status;
  badge.className = `badge badge-${status}`;
}

function showResult(result) {
  const cell = document.querySelector(`[data-result-item="${result.item}"]`);
  if (!cell) return;  // an item on another page of the list
  const shown = cell.querySelector("[data-verdict]");
  if (shown && shown.dataset.verdict === result.verdict && shown.getAttribute("href") === result.trace_url) return;
  const verdict = document.createElement(result.trace_url ? "a" : "span");
  if (result.trace_url) verdict.href = result.trace_url;
  verdict.className = "verdict";
  verdict.dataset.verdict = result.verdict;
  verdict.textContent = result.verdict;
  cell.replaceChildren(verdict);
}

function show(progress) {
  for (const name of ["done", "total", "passed", "judged"]) field(name).textContent = String(progress[name]);
  const bar = field("bar");
  bar.max = Math.max(progress.total, 1);
  bar.value = progress.done;
  showStatus(field("status"), progress.status);
  panel.dataset.status = progress.status;
  const id = panel.dataset.experiment;
  const rowStatus = document.querySelector(`[data-experiment-status="${id}"]`);
  if (rowStatus) showStatus(rowStatus, progress.status);
  const accuracy = document.querySelector(`[data-experiment-accuracy="${id}"]`);
  if (accuracy) accuracy.textContent = percent(progress.execution_accuracy);
  progress.results.forEach(showResult);
}

async function poll() {
  try {
    const response = await fetch(panel.dataset.url, {headers: {Accept: "application/json"}});
    if (!response.ok) return;  // gone, or no longer ours: stop asking
    const progress = await response.json();
    show(progress);
    if (progress.status !== "running") return;
  } catch {
    // The server is restarting, or the network dropped: ask again at the next tick.
  }
  window.setTimeout(poll, POLL_MS);
}

if (panel && panel.dataset.status === "running") window.setTimeout(poll, POLL_MS);
