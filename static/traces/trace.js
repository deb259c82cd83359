// The trace view of the detail page: the run tree (collapsible) beside a waterfall on a scaled
// time axis, and the selected run's details in a side panel. It is built from the trace's
// events, so stored, live and replayed traces draw the same way. Trace data reaches the page
// only through textContent, attribute setters and the sanitized fragments of libs.js.
import {el, formatDuration, formatNumber, highlightJson, highlightSql, renderMarkdown, renderTable, stepLabel} from "./render.js";

const STARTED = new Set(["step_started", "think_started", "tool_started"]);
const ENDED = new Set(["think_completed", "tool_completed", "run_error", "run_completed"]);
const TYPE_LABEL = {agent: "Step", think: "LLM", tool: "Tool"};

function time(value) {
  const parsed = Date.parse(value || "");
  return Number.isNaN(parsed) ? null : parsed;
}

// "Nice" tick steps for a span of `span` ms: 1, 2 or 5 times a power of ten, about 6 ticks.
export function tickStep(span) {
  const rough = Math.max(span, 1) / 6;
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const factor of [1, 2, 5, 10]) if (power * factor >= rough) return power * factor;
  return power * 10;
}

function tickLabel(ms, step) {
  if (step >= 1000) return `${formatNumber(ms / 1000)} s`;
  if (step < 1) return `${ms.toFixed(Math.ceil(-Math.log10(step)))} ms`;  // a run of under a millisecond
  return `${Math.round(ms)} ms`;
}

export class RunTree {
  constructor() {
    this.reset();
  }

  reset() {
    this.runs = new Map();  // run_id -> run fields (latest event), plus children and order
    this.order = 0;
    this.trace = {};
    this.collapsed = new Set();
  }

  apply(message) {
    const data = message.data || {};
    const kind = message.event_type;
    if (kind === "trace_started") {
      this.trace = {...this.trace, started: time(message.timestamp), request: data.request, metadata: data.metadata || {},
        agent: data.agent_name, status: "running", startedAt: message.timestamp};
    } else if (kind === "trace_completed") {
      this.trace = {...this.trace, ended: time(message.timestamp), status: data.status, answer: data.final_response,
        error: data.error, errorType: data.error_type, duration: data.duration_ms, tokens: data.total_tokens,
        cost: data.total_cost};
    } else if (STARTED.has(kind) || ENDED.has(kind)) {
      const known = this.runs.get(data.run_id);
      const run = {...(known || {order: this.order++}), ...data};
      if (kind === "think_completed") run.usage = data.token_usage || null;
      this.runs.set(data.run_id, run);
    } else {
      return false;
    }
    return true;
  }

  // Depth-first: each run after its parent, siblings by start time then arrival.
  rows() {
    const children = new Map();
    for (const run of this.runs.values()) {
      const parent = run.parent_run_id && this.runs.has(run.parent_run_id) ? run.parent_run_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(run);
    }
    const byStart = (a, b) => (time(a.start_time) ?? 0) - (time(b.start_time) ?? 0) || a.order - b.order;
    const rows = [];
    const walk = (parent, depth) => {
      for (const run of (children.get(parent) || []).sort(byStart)) {
        const kids = children.get(run.run_id) || [];
        rows.push({run, depth, hasChildren: kids.length > 0});
        if (!this.collapsed.has(run.run_id)) walk(run.run_id, depth + 1);
      }
    };
    walk(null, 0);
    return rows;
  }

  // The time the runs span (the trace's own start and end only when it has no runs: an ingested
  // trace ends a grace period after its last span).
  bounds(now) {
    let start = this.runs.size ? null : this.trace.started ?? null;
    let end = this.runs.size ? null : this.trace.ended ?? null;
    for (const run of this.runs.values()) {
      const s = time(run.start_time);
      const e = time(run.end_time) ?? (run.status === "running" ? now : s);
      if (s !== null && (start === null || s < start)) start = s;
      if (e !== null && (end === null || e > end)) end = e;
    }
    if (start === null) return null;
    if (end === null || end < start) end = start;
    if (this.trace.status === "running") end = Math.max(end, now);
    return {start, end, span: Math.max(end - start, 1)};
  }
}

export class TraceTreeView {
  constructor(root, {onSelect} = {}) {
    this.root = root;
    this.axis = root.querySelector("[data-axis]");
    this.body = root.querySelector("[data-spans]");
    this.panel = root.querySelector("[data-run-panel]");
    this.tree = new RunTree();
    this.selected = null;
    this.onSelect = onSelect || (() => {});
    this.pending = false;
  }

  reset() {
    this.tree.reset();
    this.selected = null;
    this.draw();
    this.showTrace();
  }

  apply(message) {
    if (!this.tree.apply(message)) return;
    if (this.pending) return;
    this.pending = true;  // many events in a burst (a replay at full speed) draw once
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
      if (this.selected && this.tree.runs.has(this.selected)) this.showRun(this.selected);
      else if (!this.selected) this.showTrace();
    });
  }

  applyNow(messages) {
    for (const message of messages) this.tree.apply(message);
    this.draw();
    this.showTrace();
  }

  draw() {
    const rows = this.tree.rows();
    const bounds = this.tree.bounds(Date.now());
    this.drawAxis(bounds);
    this.body.replaceChildren(...rows.map((row) => this.row(row, bounds)));
    if (!rows.length) this.body.append(el("p", {class: "muted empty", text: "No runs recorded."}));
  }

  drawAxis(bounds) {
    const ticks = el("div", {class: "ticks"});
    if (bounds) {
      const step = tickStep(bounds.span);
      for (let at = 0; at <= bounds.span + 0.5; at += step) {
        const tick = el("span", {class: "tick", text: tickLabel(at, step)});
        tick.style.left = `${(at / bounds.span) * 100}%`;
        ticks.append(tick);
      }
    }
    this.axis.replaceChildren(el("div", {class: "span-label axis-label", text: "Run"}), el("div", {class: "span-track"}, ticks));
  }

  row({run, depth, hasChildren}, bounds) {
    const toggle = hasChildren
      ? el("button", {type: "button", class: "toggle", "aria-label": "Collapse or expand",
        "aria-expanded": String(!this.tree.collapsed.has(run.run_id)), text: this.tree.collapsed.has(run.run_id) ? "▸" : "▾"})
      : el("span", {class: "toggle-space"});
    const name = run.run_type === "agent" ? stepLabel(run.name) : run.name;
    const label = el("div", {class: "span-label"},
      toggle,
      el("span", {class: `chip chip-${run.run_type}`, text: TYPE_LABEL[run.run_type] || run.run_type}),
      el("span", {class: "span-name", text: name, title: name}),
      run.status !== "success" ? el("span", {class: `badge badge-${run.status}`, text: run.status}) : null);
    label.style.paddingLeft = `${depth * 1.1 + 0.3}rem`;
    const bar = el("span", {class: `bar bar-${run.run_type} bar-${run.status}`});
    const track = el("div", {class: "span-track"}, bar, el("span", {class: "span-ms", text: formatDuration(run.duration_ms)}));
    if (bounds) {
      const start = time(run.start_time) ?? bounds.start;
      const end = time(run.end_time) ?? (run.status === "running" ? Date.now() : start);
      const left = ((start - bounds.start) / bounds.span) * 100;
      bar.style.left = `${Math.min(left, 99.6)}%`;
      bar.style.width = `${Math.max(((end - start) / bounds.span) * 100, 0.4)}%`;
    }
    const node = el("div", {class: "span-row", role: "treeitem", tabindex: "0", "aria-level": String(depth + 1),
      dataset: {run: run.run_id, runType: run.run_type, status: run.status}}, label, track);
    if (run.run_id === this.selected) node.classList.add("selected");
    node.addEventListener("click", (event) => {
      if (event.target.closest(".toggle")) {
        if (this.tree.collapsed.has(run.run_id)) this.tree.collapsed.delete(run.run_id);
        else this.tree.collapsed.add(run.run_id);
        this.draw();
        return;
      }
      this.select(run.run_id);
    });
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); this.select(run.run_id); }
    });
    return node;
  }

  select(runId) {
    this.selected = runId;
    for (const node of this.body.querySelectorAll(".span-row.selected")) node.classList.remove("selected");
    this.body.querySelector(`[data-run="${CSS.escape(runId)}"]`)?.classList.add("selected");
    this.showRun(runId);
    this.onSelect(runId);
  }

  // Nothing selected: the question and the answer.
  showTrace() {
    const trace = this.tree.trace;
    this.panel.replaceChildren(...[
      el("h3", {text: "Answer"}),
      trace.answer ? renderMarkdown(trace.answer) : el("p", {class: "muted", text: trace.status === "running" ? "Running…" : "No answer."}),
      trace.error ? el("p", {class: "error-text", text: `${trace.errorType || "Error"}: ${trace.error}`}) : null,
      el("p", {class: "muted hint", text: "Select a run to see what went in and what came out."}),
    ].filter(Boolean));
  }

  showRun(runId) {
    const run = this.tree.runs.get(runId);
    if (!run) return;
    const parts = [
      el("h3", {}, el("span", {class: `chip chip-${run.run_type}`, text: TYPE_LABEL[run.run_type] || run.run_type}), " ",
        run.run_type === "agent" ? stepLabel(run.name) : run.name),
      el("p", {class: "run-facts"},
        el("span", {class: `badge badge-${run.status}`, text: run.status}), " ",
        el("span", {class: "muted", text: [formatDuration(run.duration_ms), run.model || (run.metadata || {}).model,
          run.usage ? `${run.usage.prompt_tokens} → ${run.usage.completion_tokens} tokens` : null,
          run.cost ? `$${formatNumber(run.cost)}` : null].filter(Boolean).join(" · ")})),
    ];
    if (run.error) parts.push(el("p", {class: "error-text", text: `${run.error_type || "Error"}: ${run.error}`}));
    if (run.run_type === "think") parts.push(...this.llmCall(run));
    else if (run.run_type === "tool") parts.push(...toolCall(run));
    else parts.push(section("Inputs", highlightJson(run.inputs || {})), section("Outputs", highlightJson(run.outputs || {})));
    this.panel.replaceChildren(...parts.filter(Boolean));
  }

  // What the model was sent: the conversation up to this call (each call stores the messages
  // added since the one before), the tools offered and the parameters; and what came back.
  llmCall(run) {
    const inputs = run.inputs || {};
    const outputs = run.outputs || {};
    const calls = [...this.tree.runs.values()].filter((r) => r.run_type === "think").sort((a, b) => a.order - b.order);
    let messages = [];
    if (inputs.messages_from === undefined) {
      messages = inputs.messages || [];  // the whole conversation on this call (traces from other agents)
    } else {
      for (const call of calls) {
        messages.push(...((call.inputs || {}).messages || []));
        if (call.run_id === run.run_id) break;
      }
    }
    // The tool schema is recorded on the first call that offered it (and again when it changes).
    let tools = inputs.tools;
    if (!tools && inputs.tool_names) {
      for (const call of calls) {
        if (call.run_id === run.run_id) break;
        if ((call.inputs || {}).tools) tools = call.inputs.tools;
      }
    }
    const parameters = (run.metadata || {}).parameters;
    return [
      section(`Messages sent (${inputs.message_count ?? messages.length})`,
        messages.length ? el("div", {class: "messages"}, messages.map(message)) : el("pre", {text: inputs.content || ""})),
      tools && tools.length
        ? section(`Tools offered (${tools.length})`, el("details", {}, el("summary", {text: tools.map((t) => (t.function || t).name).join(", ")}), highlightJson(tools)))
        : null,
      parameters ? section("Parameters", highlightJson(parameters)) : null,
      section("Response",
        outputs.content ? renderMarkdown(outputs.content) : null,
        (outputs.tool_calls || []).length ? el("div", {class: "messages"}, outputs.tool_calls.map(toolCallMessage)) : null,
        !outputs.content && !(outputs.tool_calls || []).length ? el("p", {class: "muted", text: "(empty)"}) : null),
    ];
  }
}

function section(title, ...content) {
  return el("section", {class: "panel-section"}, el("h4", {text: title}), ...content);
}

function message(entry) {
  const role = entry.role || "?";
  return el("div", {class: `message message-${role}`},
    el("div", {class: "message-role", text: role + (entry.tool_call_id ? ` · ${entry.tool_call_id}` : "")}),
    entry.content ? el("pre", {class: "message-content", text: String(entry.content)}) : null,
    ...(entry.tool_calls || []).map(toolCallMessage));
}

function toolCallMessage(call) {
  const fn = call.function || {};
  let args = fn.arguments;
  try { args = JSON.stringify(JSON.parse(fn.arguments), null, 2); } catch { /* shown as sent */ }
  return el("div", {class: "tool-call"}, el("code", {text: `${fn.name}(…)`}), el("pre", {text: args || ""}));
}

function toolCall(run) {
  const inputs = run.inputs || {};
  const outputs = run.outputs || {};
  const sql = outputs.sql || inputs.sql;
  return [
    section("Arguments", highlightJson(inputs)),
    sql ? section("SQL", highlightSql(sql), outputs.guard ? el("p", {class: "muted", text: `SQL guard: ${outputs.guard}`}) : null) : null,
    outputs.columns
      ? section(`Rows (${(outputs.rows || []).length}${outputs.truncated ? ", capped" : ""})`, renderTable(outputs.columns, outputs.rows || [], 200))
      : section("Output", el("pre", {class: "output", text: String(outputs.output ?? "").slice(0, 20000)})),
  ];
}
