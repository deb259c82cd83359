import {TraceView} from "./render.js";
import {TraceSocket, sessionId} from "./socket.js";
import {TraceTreeView} from "./trace.js";

const root = document.querySelector("[data-detail]");
const view = new TraceView(root.querySelector("[data-tab=timeline]"));
view.statusLabel = root.querySelector("[data-trace-status]");
const tree = new TraceTreeView(root.querySelector("[data-tab=trace]"));
const stored = JSON.parse(document.getElementById("trace-events").textContent);
const traceId = root.dataset.traceId;
const connection = root.querySelector("[data-connection]");
const pauseButton = root.querySelector("[data-pause]");
let mode = "stored"; // stored | live | replay
let paused = false;
const pending = [];

// Stored events draw without scrolling anything: the page opens at its top.
for (const message of stored) view.apply(message, {scroll: false});
tree.applyNow(stored);

function show(message) {
  view.apply(message);
  tree.apply(message);
  if (message.event_type === "trace_completed" && mode === "live") following(false);
}

// The connection state only matters while something arrives: a running trace or a replay.
function following(on) {
  connection.hidden = !on;
}

const socket = new TraceSocket(sessionId(), {
  onStatus: (text) => { connection.textContent = text; connection.dataset.state = text; },
  resumeFrom: () => (mode === "live" && !view.finished ? {traceId, afterSeq: view.lastSeq} : null),
  onEvent: (message) => {
    if (message.trace_id && message.trace_id !== traceId && !message.event_type.startsWith("replay")) return;
    if (message.event_type === "connection_established" || message.event_type === "pong") return;
    if (message.event_type === "replay_completed") { pauseButton.disabled = true; following(false); }
    if (mode === "replay" && paused) { pending.push(message); return; }
    show(message);
  },
});
window.tracesite = {socket, view, tree};

function replay(speed) {
  mode = "replay";
  paused = false;
  pending.length = 0;
  view.reset();
  tree.reset();
  following(true);
  socket.send({action: "unsubscribe_trace", trace_id: traceId});
  socket.send({action: "replay_trace", trace_id: traceId, speed});
  pauseButton.textContent = "Pause";
  pauseButton.disabled = false;
}

for (const button of root.querySelectorAll("[data-replay]")) {
  button.addEventListener("click", () => replay(Number(button.dataset.replay)));
}
pauseButton.addEventListener("click", () => {
  paused = !paused;
  pauseButton.textContent = paused ? "Resume" : "Pause";
  if (!paused) for (const message of pending.splice(0)) show(message);
});

// Tabs: the trace view, the timeline of events, the raw event log.
const tabs = root.querySelectorAll("[data-tab-button]");
for (const tab of tabs) {
  tab.addEventListener("click", () => {
    for (const other of tabs) other.setAttribute("aria-selected", String(other === tab));
    for (const panel of root.querySelectorAll("[data-tab]")) panel.hidden = panel.dataset.tab !== tab.dataset.tabButton;
  });
}

// A score's run link (#run=<id>) selects that run in the trace view.
function selectLinkedRun() {
  if (!location.hash.startsWith("#run=")) return;
  root.querySelector("[data-tab-button=trace]").click();
  tree.select(decodeURIComponent(location.hash.slice("#run=".length)));
}
window.addEventListener("hashchange", selectLinkedRun);
selectLinkedRun();

if (root.dataset.running === "true") {
  mode = "live";
  following(true);
  socket.follow(traceId, () => view.lastSeq);
}
