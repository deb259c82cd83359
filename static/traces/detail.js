import {TraceView, el} from "./render.js";
import {TraceSocket, sessionId} from "./socket.js";
import {TraceTreeView} from "./trace.js";

const root = document.querySelector("[data-detail]");
const traceId = root.dataset.traceId;
const api = `/api/traces/${traceId}`;
const embedded = JSON.parse(document.getElementById("trace-tree").textContent);

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (!response.ok) return null;
  return response.json();
}

// What the tree loads as it is scrolled, expanded, searched and selected.
const source = {
  async children(parent, {offset, after, limit} = {}) {
    const query = new URLSearchParams();
    if (parent) query.set("parent", parent);
    if (after) query.set("after", after);
    else if (offset !== undefined) query.set("offset", String(offset));
    query.set("limit", String(limit || 200));
    const body = await getJson(`${api}/runs?${query}`);
    return body && body.pages.length ? body.pages[0] : {parent, runs: [], next: null, offset};
  },
  async firstPages(parents) {
    const query = new URLSearchParams(parents.map((parent) => ["parent", parent]));
    query.set("offset", "0");
    query.set("limit", "50");
    const body = await getJson(`${api}/runs?${query}`);
    return body ? body.pages : [];
  },
  run: (runId) => getJson(`${api}/runs/${encodeURIComponent(runId)}`),
};

const view = new TraceView(root.querySelector("[data-tab=timeline]"));
view.statusLabel = root.querySelector("[data-trace-status]");
const tree = new TraceTreeView(root.querySelector("[data-tab=trace]"), {source});
const connection = root.querySelector("[data-connection]");
const pauseButton = root.querySelector("[data-pause]");
let mode = "stored"; // stored | live | replay
let paused = false;
let generation = 0;  // a replay starts a new one: stored events still loading for an older one are dropped
const pending = [];

// The page opens at its top with the first screen of the tree, from the rows the server embedded.
tree.load(embedded.trace, embedded.pages);
if (root.dataset.running === "true") {
  // Followed from the last event the page was read at; the earlier ones load with their tabs.
  view.traceId = traceId;
  view.lastSeq = embedded.trace.last_seq;
}

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
  generation += 1;
  paused = false;
  pending.length = 0;
  view.reset();
  tree.reset();
  rawRows.replaceChildren();
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

// The stored events, for the timeline and raw events tabs: a page at a time, the first when one
// of them is opened, the next as it is scrolled to its end.
const rawRows = root.querySelector("[data-raw-events]");
const eventsMore = root.querySelector("[data-events-more]");
const events = {after: 0, done: false, busy: false};

async function loadEvents() {
  if (events.done || events.busy || mode === "replay") return;
  events.busy = true;
  eventsMore.hidden = false;
  const started = generation;
  try {
    const page = await getJson(`${api}/events?after=${events.after}&limit=500`);
    if (!page || started !== generation) return;
    for (const message of page.events) {
      if (message.seq > embedded.trace.last_seq && mode === "live") continue;  // the socket delivers those
      view.apply(message, {scroll: false});
      rawRows.append(el("tr", {}, el("td", {class: "num", text: String(message.seq)}), el("td", {text: message.timestamp}),
        el("td", {}, el("code", {text: message.event_type})), el("td", {class: "muted", text: message.message_id})));
    }
    events.after = page.next ?? events.after;
    events.done = page.next === null;
  } finally {
    events.busy = false;
    eventsMore.hidden = events.done;
  }
}

for (const tab of ["timeline", "raw"]) {
  const panel = root.querySelector(`[data-tab=${tab}]`);
  panel.addEventListener("scroll", () => {
    if (panel.scrollTop + panel.clientHeight > panel.scrollHeight - 600) loadEvents();
  }, {passive: true});
}

// Tabs: the trace view, the timeline of events, the raw event log.
const tabs = root.querySelectorAll("[data-tab-button]");
for (const tab of tabs) {
  tab.addEventListener("click", () => {
    for (const other of tabs) other.setAttribute("aria-selected", String(other === tab));
    for (const panel of root.querySelectorAll("[data-tab]")) panel.hidden = panel.dataset.tab !== tab.dataset.tabButton;
    if (tab.dataset.tabButton !== "trace" && !events.after) loadEvents();
    if (tab.dataset.tabButton === "trace") tree.draw();
  });
}

// Search within the trace, on the server: hits listed, each one selected where it is in the tree.
const search = root.querySelector("[data-tree-search]");
const hits = root.querySelector("[data-search-hits]");
const summary = root.querySelector("[data-search-summary]");

function searchQuery(extra = {}) {
  const query = new URLSearchParams();
  const text = search.querySelector("[data-search-input]").value.trim();
  const type = search.querySelector("[data-search-type]").value;
  const status = search.querySelector("[data-search-status]").value;
  if (text) query.set("q", text);
  if (type) query.set("type", type);
  if (status) query.set("status", status);
  for (const [key, value] of Object.entries(extra)) query.set(key, value);
  return query;
}

function hitItem(run) {
  const button = el("button", {type: "button", class: "link-button", dataset: {hit: run.id}},
    el("span", {class: `chip chip-${run.run_type}`, text: run.run_type}), " ", run.name,
    run.status !== "success" ? el("span", {class: `badge badge-${run.status}`, text: run.status}) : null);
  button.addEventListener("click", () => tree.reveal(run.id, run.path));
  return el("li", {}, button);
}

search.addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = searchQuery({limit: "50"});
  if (![...query.keys()].some((key) => key !== "limit")) { hits.hidden = true; summary.textContent = ""; return; }
  const found = await getJson(`${api}/search?${query}`);
  if (!found) return;
  hits.replaceChildren(...found.runs.map(hitItem));
  hits.hidden = !found.runs.length;
  summary.textContent = found.runs.length ? `${found.runs.length}${found.next ? "+" : ""} found` : "Nothing found.";
  if (found.runs.length === 1) tree.reveal(found.runs[0].id, found.runs[0].path);
});

root.querySelector("[data-next-error]").addEventListener("click", async () => {
  const extra = {error: "1", limit: "1"};
  if (tree.selected) extra.from = tree.selected;
  const found = await getJson(`${api}/search?${new URLSearchParams(extra)}`);
  if (!found) return;
  summary.textContent = found.runs.length ? "" : "No error after this run.";
  if (found.runs.length) tree.reveal(found.runs[0].id, found.runs[0].path);
});

// A score's run link (#run=<id>) selects that run in the trace view.
function selectLinkedRun() {
  if (!location.hash.startsWith("#run=")) return;
  root.querySelector("[data-tab-button=trace]").click();
  tree.reveal(decodeURIComponent(location.hash.slice("#run=".length)));
}
window.addEventListener("hashchange", selectLinkedRun);
selectLinkedRun();

if (root.dataset.running === "true") {
  mode = "live";
  following(true);
  socket.follow(traceId, () => view.lastSeq);
}
