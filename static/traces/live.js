import {el, TraceView} from "./render.js";
import {TraceSocket, sessionId} from "./socket.js";

const root = document.querySelector("[data-live]");
const view = new TraceView(root);
const form = root.querySelector("form[data-ask]");
const question = form.querySelector("textarea");
const cancel = root.querySelector("[data-cancel]");
const status = root.querySelector("[data-connection]");
const recent = document.querySelector("[data-recent]");
const rerunOf = form.dataset.rerunOf || null;

const socket = new TraceSocket(sessionId(), {
  onStatus: (text) => { status.textContent = text; status.dataset.state = text; },
  resumeFrom: (hello) => {
    if (view.traceId && !view.finished) return {traceId: view.traceId, afterSeq: view.lastSeq};
    if (hello.active_trace_id) return {traceId: hello.active_trace_id, afterSeq: 0};
    return null;
  },
  onEvent: (message) => {
    const kind = message.event_type;
    if (kind === "connection_established") { badge(message.data.model); return; }
    if (kind === "pong") return;
    if (kind === "trace_started" || kind === "trace_completed") feed(message);
    if (message.trace_id) {
      if (message.session_id !== socket.sessionId) return; // another session's trace, from the feed
      if (message.trace_id !== view.traceId) {
        if (kind !== "trace_started" && view.traceId && !view.finished) return;
        view.reset();
      }
    }
    view.apply(message);
    running(Boolean(view.traceId) && !view.finished);
  },
});
socket.subscribeAll();
window.tracesite = {socket, view};

function badge(model) {
  const node = root.querySelector("[data-model]");
  if (model) node.textContent = model === "builtin" ? "built-in offline model" : model;
}

function running(on) {
  cancel.disabled = !on;
  form.querySelector("button[type=submit]").disabled = on;
}

function start(text) {
  if (!text.trim()) return;
  view.reset();
  const message = {action: "start_agent", question: text.trim()};
  if (rerunOf) message.rerun_of = rerunOf;
  socket.send(message);
  running(true);
}

form.addEventListener("submit", (event) => { event.preventDefault(); start(question.value); });
question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); start(question.value); }
});
cancel.addEventListener("click", () => socket.send({action: "cancel_agent"}));
for (const button of root.querySelectorAll("[data-example]")) {
  button.addEventListener("click", () => { question.value = button.dataset.example; question.focus(); });
}

// The side panel: traces starting and finishing anywhere on the server.
function feed(message) {
  const id = message.trace_id;
  let row = recent.querySelector(`[data-trace="${CSS.escape(id)}"]`);
  if (!row) {
    row = el("li", {dataset: {trace: id}},
      el("a", {href: `/traces/${id}/`, text: message.data.request || "(trace)"}),
      el("span", {class: "badge badge-running", text: "running"}));
    recent.prepend(row);
    while (recent.children.length > 15) recent.lastElementChild.remove();
  }
  if (message.event_type === "trace_completed") {
    const badge = row.querySelector(".badge");
    badge.textContent = message.data.status;
    badge.className = `badge badge-${message.data.status}`;
  }
}

if (form.dataset.autostart) {
  start(question.value);
  // A reload (or going back) shows the question again, but does not start it a second time.
  history.replaceState(null, "", `?rerun=${encodeURIComponent(rerunOf)}`);
}
running(false);
