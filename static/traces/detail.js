import {el, renderMarkdown, renderTable, highlightSql, TraceView} from "./render.js";
import {TraceSocket, sessionId} from "./socket.js";

const root = document.querySelector("[data-detail]");
const view = new TraceView(root);
const stored = JSON.parse(document.getElementById("trace-events").textContent);
const runs = JSON.parse(document.getElementById("trace-runs").textContent);
const traceId = root.dataset.traceId;
let mode = "stored"; // stored | live | replay
let paused = false;
const pending = [];

for (const message of stored) view.apply(message);

const socket = new TraceSocket(sessionId(), {
  onStatus: (text) => { root.querySelector("[data-connection]").textContent = text; },
  resumeFrom: () => (root.dataset.running === "true" && !view.finished ? {traceId, afterSeq: view.lastSeq} : null),
  onEvent: (message) => {
    if (message.trace_id && message.trace_id !== traceId && !message.event_type.startsWith("replay")) return;
    if (message.event_type === "connection_established" || message.event_type === "pong") return;
    if (mode === "replay" && paused) { pending.push(message); return; }
    view.apply(message);
  },
});
window.tracesite = {socket, view};

function replay(speed) {
  mode = "replay";
  paused = false;
  pending.length = 0;
  view.reset();
  socket.send({action: "unsubscribe_trace", trace_id: traceId});
  socket.send({action: "replay_trace", trace_id: traceId, speed});
  root.querySelector("[data-pause]").textContent = "Pause";
}

for (const button of root.querySelectorAll("[data-replay]")) {
  button.addEventListener("click", () => replay(Number(button.dataset.replay)));
}
root.querySelector("[data-pause]").addEventListener("click", (event) => {
  paused = !paused;
  event.target.textContent = paused ? "Resume" : "Pause";
  if (!paused) for (const message of pending.splice(0)) view.apply(message);
});

// Selecting a run shows what went in and came out.
const panel = root.querySelector("[data-run-panel]");
function showRun(runId) {
  const run = runs[runId];
  if (!run) return;
  const outputs = run.outputs || {};
  const inputs = run.inputs || {};
  panel.replaceChildren(...[
    el("h3", {text: `${run.name} · ${run.run_type} · ${run.status}`}),
    el("p", {class: "muted", text: `${run.duration_ms ?? "?"} ms · ${run.tokens} tokens`}),
    el("h4", {text: "Inputs"}),
    inputs.sql ? highlightSql(inputs.sql) : el("pre", {text: typeof inputs.content === "string" ? inputs.content : JSON.stringify(inputs, null, 2)}),
    el("h4", {text: "Outputs"}),
    outputs.sql ? el("div", {}, el("p", {class: "muted", text: `SQL guard: ${outputs.guard || "n/a"}`}), highlightSql(outputs.sql)) : null,
    outputs.columns ? renderTable(outputs.columns, outputs.rows || []) : null,
    outputs.tool_calls && outputs.tool_calls.length ? el("pre", {text: JSON.stringify(outputs.tool_calls, null, 2)}) : null,
    typeof outputs.content === "string" && outputs.content ? renderMarkdown(outputs.content) : null,
    !outputs.columns && outputs.output ? el("pre", {text: String(outputs.output).slice(0, 5000)}) : null,
    run.error ? el("p", {class: "error-text", text: `${run.error_type}: ${run.error}`}) : null,
  ].filter(Boolean));
}
for (const row of root.querySelectorAll("[data-run]")) {
  row.addEventListener("click", () => {
    root.querySelectorAll("[data-run].selected").forEach((r) => r.classList.remove("selected"));
    root.querySelectorAll(`[data-run="${CSS.escape(row.dataset.run)}"]`).forEach((r) => r.classList.add("selected"));
    showRun(row.dataset.run);
  });
}

if (root.dataset.running === "true") {
  mode = "live";
  socket.follow(traceId, () => view.lastSeq);
}
