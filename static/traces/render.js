// Rendering of trace events: one function per event kind, shared by the live page, resumed
// events and replays. Trace data is untrusted (users, the model): it only ever reaches the page
// through textContent and attribute setters, or as the sanitized DOM fragments of libs.js.
import {codeInto, markdownInto} from "./libs.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function highlightSql(sql) {
  return codeInto(el("pre", {class: "sql hljs"}), sql, "sql");
}

export function highlightJson(value) {
  return codeInto(el("pre", {class: "json hljs"}), JSON.stringify(value, null, 2), "json");
}

export function renderTable(columns, rows, limit = 50) {
  const table = el("table", {class: "result"});
  table.append(el("thead", {}, el("tr", {}, columns.map((c) => el("th", {text: c})))));
  const body = el("tbody");
  for (const row of rows.slice(0, limit)) body.append(el("tr", {}, row.map((v) => cell(v))));
  table.append(body);
  const wrap = el("div", {class: "table-wrap"}, table);
  if (rows.length > limit) wrap.append(el("p", {class: "muted", text: `${rows.length - limit} more rows`}));
  return wrap;
}

function cell(value) {
  if (value === null || value === undefined) return el("td", {class: "null", text: "NULL"});
  if (typeof value === "number") return el("td", {class: "num", text: formatNumber(value)});
  return el("td", {text: String(value)});
}

// Numbers as people read them: floating-point noise (3098082.8100000042) rounded away.
export function formatNumber(value) {
  if (!Number.isFinite(value) || Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(12)));
}

// Markdown (answers, model text) through markdown-it and DOMPurify, as DOM nodes.
export function renderMarkdown(text) {
  return markdownInto(el("div", {class: "markdown"}), text || "");
}

// Durations as people read them: "<1 ms", "840 ms", "1.24 s", "2 min 5 s".
export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

// "step_3" is the third step; "final_answer" the answer asked for at the step limit.
export function stepLabel(name) {
  const match = /^step_(\d+)$/.exec(name || "");
  if (match) return `Step ${match[1]}`;
  if (name === "final_answer") return "Final answer";
  return name || "";
}

function ms(value) {
  return formatDuration(value);
}

// One line of the timeline: a small label of its kind (text, not emoji: it renders with any font).
function item(kind, label, title, ...body) {
  return el("li", {class: `event event-${kind}`}, el("div", {class: "event-head"}, el("span", {class: `chip chip-${kind}`, text: label}), title), ...body);
}

// The view of one trace: applies each event once, in seq order, whatever its source.
export class TraceView {
  constructor(root) {
    this.root = root;
    this.timeline = root.querySelector("[data-timeline]");
    this.answer = root.querySelector("[data-answer]");
    this.progress = root.querySelector("[data-progress]");
    this.progressLabel = root.querySelector("[data-progress-label]");
    this.counters = root.querySelector("[data-counters]");
    this.statusLabel = root.querySelector("[data-trace-status]");
    this.autoScroll = true;  // live events scroll into view; stored ones do not
    this.reset();
  }

  reset() {
    this.step = 0;
    this.seqs = [];
    this.seen = new Set();
    this.lastSeq = 0;
    this.traceId = null;
    this.streams = {};
    this.tokens = 0;
    this.cost = 0;
    this.finished = false;
    if (this.timeline) this.timeline.replaceChildren();
    if (this.answer) this.answer.replaceChildren();
    this.setProgress(0, "");
    this.setStatus("");
    this.updateCounters();
  }

  apply(message, {scroll = this.autoScroll} = {}) {
    let late = false;  // an earlier seq than one shown already (a resume that came late): goes in its place
    if (message.seq !== undefined) {
      const key = `${message.trace_id}:${message.seq}`;
      if (this.seen.has(key)) return false;
      this.seen.add(key);
      this.seqs.push(message.seq);
      late = message.seq < this.lastSeq && message.trace_id === this.traceId;
      this.lastSeq = Math.max(this.lastSeq, message.seq);
      this.traceId = message.trace_id;
    }
    const handler = RENDERERS[message.event_type];
    const node = handler ? handler(message.data || {}, this, message) : null;
    if (node && this.timeline) {
      if (message.seq !== undefined) node.dataset.seq = String(message.seq);
      if (message.replay) node.classList.add("replayed");
      const next = late ? [...this.timeline.children].find((child) => Number(child.dataset.seq) > message.seq) : null;
      if (next) this.timeline.insertBefore(node, next);
      else this.timeline.append(node);
      if (scroll) node.scrollIntoView?.({block: "nearest"});
    }
    return true;
  }

  setProgress(percent, label) {
    if (this.progress) this.progress.style.width = `${Math.max(0, Math.min(100, percent))}%`;
    if (this.progressLabel) this.progressLabel.textContent = label;
  }

  updateCounters() {
    if (this.counters) this.counters.textContent = `${this.tokens} tokens · $${this.cost.toFixed(6)}`;
  }

  setStatus(status) {
    if (!this.statusLabel) return;
    this.statusLabel.textContent = status;
    this.statusLabel.className = status ? `badge badge-${status}` : "badge";
  }

  stepProgress(activity) {
    if (!this.step) return;
    const label = this.progressLabel ? this.progressLabel.textContent : "";
    const percent = this.progress ? parseFloat(this.progress.style.width) || 0 : 0;
    const total = /of (\d+)/.exec(label);
    this.setProgress(percent, `step ${this.step}${total ? ` of ${total[1]}` : ""} · ${activity}`);
  }
}

const RENDERERS = {
  trace_started(data, view) {
    view.finished = false;
    view.setStatus("running");
    view.setProgress(0, `step 0 of ${data.max_steps}`);
    return item("trace", "Question", el("q", {text: data.request}),
      el("div", {class: "muted", text: `${data.agent_name} · model ${(data.metadata || {}).model || ""}`}));
  },
  step_started(data, view) {
    const step = /^step_(\d+)$/.exec(data.name || "");
    view.step = step ? Number(step[1]) : view.step + 1;
    return item("step", "Step", el("strong", {text: stepLabel(data.name)}));
  },
  think_started(data, view) {
    const stream = el("div", {class: "stream"});
    view.streams[data.run_id] = stream;
    view.stepProgress("thinking");
    return item("think", "LLM", el("span", {text: "Thinking…"}), stream);
  },
  think_delta(data, view) {
    const stream = view.streams[data.run_id];
    if (stream) stream.textContent += data.delta;
    return null;
  },
  think_completed(data, view) {
    const usage = data.token_usage || {};
    view.tokens += usage.total_tokens || 0;
    view.cost += data.cost || 0;
    view.updateCounters();
    const stream = view.streams[data.run_id];
    if (stream) stream.closest("li")?.remove();
    const calls = ((data.outputs || {}).tool_calls || []).map((c) => el("div", {class: "call"},
      el("code", {text: `${c.function.name}(${c.function.arguments})`})));
    const content = (data.outputs || {}).content;
    return item("think", "LLM", el("span", {text: `Model answered in ${ms(data.duration_ms)} · ${usage.total_tokens || 0} tokens`}),
      content && calls.length ? el("div", {class: "model-text", text: content}) : null, ...calls);
  },
  tool_started(data, view) {
    const node = item("tool-start", "Tool", el("span", {text: `Running ${data.name}…`}));
    view.streams[data.run_id] = node;
    view.stepProgress(`running ${data.name}`);
    return node;
  },
  tool_completed(data, view) {
    view.streams[data.run_id]?.remove();
    const outputs = data.outputs || {};
    return item("tool", "Tool", el("span", {text: `${data.name} · ${ms(data.duration_ms)}`}),
      outputs.sql ? highlightSql(outputs.sql) : null,
      outputs.columns ? renderTable(outputs.columns, outputs.rows || []) : el("pre", {class: "output", text: String(outputs.output || "").slice(0, 2000)}),
      outputs.truncated ? el("p", {class: "muted", text: "More rows exist; the result was capped."}) : null);
  },
  run_error(data, view) {
    const started = view.streams[data.run_id];
    if (started) (started.closest ? started.closest("li") || started : started).remove();
    const outputs = data.outputs || {};
    return item("error", "Error", el("span", {text: `${data.name} ${data.status}: ${data.error_type || ""}`}),
      el("div", {class: "error-text", text: data.error || ""}), outputs.sql ? highlightSql(outputs.sql) : null);
  },
  run_completed() {
    return null;
  },
  status_update(data, view) {
    view.setProgress(data.progress_percentage || 0, `step ${data.current_step} of ${data.max_steps} · ${data.message || ""}`);
    return null;
  },
  progress_update(data, view) {
    view.setProgress(data.percentage || 0, `step ${data.current_step} of ${data.total_steps} · ${data.step_description || ""}`);
    return null;
  },
  trace_completed(data, view) {
    view.finished = true;
    view.setStatus(data.status);
    if (data.status === "success") view.setProgress(100, `done in ${ms(data.duration_ms)}`);
    if (data.total_tokens !== null && data.total_tokens !== undefined) view.tokens = data.total_tokens;
    view.cost = data.total_cost || view.cost;
    view.updateCounters();
    if (view.answer) {
      view.answer.replaceChildren(renderMarkdown(data.final_response || ""));
      if (data.error) view.answer.append(el("p", {class: "error-text", text: `${data.error_type || "Error"}: ${data.error}`}));
    }
    const node = item("done", data.status === "success" ? "Done" : data.status === "cancelled" ? "Cancelled" : "Failed",
      el("span", {text: `Trace ${data.status} · ${ms(data.duration_ms)} · ${data.total_runs} runs`}));
    node.classList.add(`event-done-${data.status}`);
    return node;
  },
  replay_started(data) {
    return item("replay", "Replay", el("span", {text: `Replay of ${data.events} events at ${data.speed === 0 ? "full speed" : data.speed + "×"}`}));
  },
  replay_completed() {
    return item("replay", "Replay", el("span", {text: "Replay finished"}));
  },
  error(data) {
    return item("error", "Error", el("span", {text: `${data.error}: ${data.detail || ""}`}));
  },
};
