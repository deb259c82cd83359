// Rendering of trace events: one function per event kind, shared by the live page, resumed
// events and replays. Trace data is untrusted (users, the model): it only ever reaches the page
// through textContent and attribute setters, never as HTML.

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

const SQL_KEYWORDS = new Set(("select from where group by order limit offset join left right inner outer on as and or not in is null " +
  "count sum avg min max distinct having union all with case when then else end desc asc like between show describe explain").split(" "));

export function highlightSql(sql) {
  const pre = el("pre", {class: "sql"});
  for (const token of String(sql).split(/(\s+|[(),;]|'(?:[^']|'')*')/)) {
    if (!token) continue;
    if (SQL_KEYWORDS.has(token.toLowerCase())) pre.append(el("span", {class: "kw", text: token}));
    else if (/^'.*'$/s.test(token)) pre.append(el("span", {class: "str", text: token}));
    else if (/^\d+(\.\d+)?$/.test(token)) pre.append(el("span", {class: "num", text: token}));
    else pre.append(document.createTextNode(token));
  }
  return pre;
}

export function renderTable(columns, rows, limit = 50) {
  const table = el("table", {class: "result"});
  table.append(el("thead", {}, el("tr", {}, columns.map((c) => el("th", {text: c})))));
  const body = el("tbody");
  for (const row of rows.slice(0, limit)) body.append(el("tr", {}, row.map((v) => el("td", {text: v === null ? "NULL" : String(v)}))));
  table.append(body);
  const wrap = el("div", {class: "table-wrap"}, table);
  if (rows.length > limit) wrap.append(el("p", {class: "muted", text: `${rows.length - limit} more rows`}));
  return wrap;
}

function inline(text) {
  // **bold** and `code`, as DOM nodes.
  const span = document.createDocumentFragment();
  for (const part of String(text).split(/(\*\*[^*]+\*\*|`[^`]+`)/)) {
    if (!part) continue;
    if (part.startsWith("**") && part.endsWith("**")) span.append(el("strong", {text: part.slice(2, -2)}));
    else if (part.startsWith("`") && part.endsWith("`")) span.append(el("code", {text: part.slice(1, -1)}));
    else span.append(document.createTextNode(part));
  }
  return span;
}

// A small, safe subset of markdown: paragraphs, headings, lists, code fences, pipe tables.
export function renderMarkdown(text) {
  const root = el("div", {class: "markdown"});
  const lines = String(text || "").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const lang = line.slice(3).trim();
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      i++;
      root.append(lang === "sql" ? highlightSql(code.join("\n")) : el("pre", {text: code.join("\n")}));
    } else if (/^\|.*\|\s*$/.test(line) && i + 1 < lines.length && /^\|?\s*:?-{3}/.test(lines[i + 1])) {
      const cells = (l) => l.trim().replace(/^\||\|$/g, "").split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
      const columns = cells(line);
      const rows = [];
      for (i += 2; i < lines.length && /^\|/.test(lines[i]); i++) rows.push(cells(lines[i]));
      root.append(renderTable(columns, rows, 500));
    } else if (/^#{1,4} /.test(line)) {
      root.append(el("h4", {}, inline(line.replace(/^#+ /, ""))));
      i++;
    } else if (/^\s*[-*] /.test(line)) {
      const list = el("ul");
      for (; i < lines.length && /^\s*[-*] /.test(lines[i]); i++) list.append(el("li", {}, inline(lines[i].replace(/^\s*[-*] /, ""))));
      root.append(list);
    } else if (line.trim()) {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !/^(```|\||#{1,4} |\s*[-*] )/.test(lines[i]); i++) para.push(lines[i]);
      if (!para.length) { para.push(line); i++; }
      root.append(el("p", {}, inline(para.join(" "))));
    } else {
      i++;
    }
  }
  return root;
}

function ms(value) {
  return value === null || value === undefined ? "" : `${value} ms`;
}

function item(kind, icon, title, ...body) {
  return el("li", {class: `event event-${kind}`}, el("div", {class: "event-head"}, el("span", {class: "icon", text: icon}), title), ...body);
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
    this.reset();
  }

  reset() {
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
    this.updateCounters();
  }

  apply(message) {
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
      node.scrollIntoView?.({block: "nearest"});
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
    this.statusLabel.className = `badge badge-${status}`;
  }
}

const RENDERERS = {
  trace_started(data, view) {
    view.finished = false;
    view.setStatus("running");
    view.setProgress(0, `step 0 of ${data.max_steps}`);
    return item("trace", "▶", el("span", {}, "Question: ", el("q", {text: data.request})),
      el("div", {class: "muted", text: `${data.agent_name} · model ${(data.metadata || {}).model || ""}`}));
  },
  step_started(data) {
    return item("step", "⟶", el("strong", {text: data.name}));
  },
  think_started(data, view) {
    const stream = el("div", {class: "stream"});
    view.streams[data.run_id] = stream;
    return item("think", "💭", el("span", {text: "Thinking…"}), stream);
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
    return item("think", "🧠", el("span", {text: `Model answered in ${ms(data.duration_ms)} · ${usage.total_tokens || 0} tokens`}),
      content && calls.length ? el("div", {class: "model-text", text: content}) : null, ...calls);
  },
  tool_started(data, view) {
    const node = item("tool-start", "🔧", el("span", {text: `Running ${data.name}…`}));
    view.streams[data.run_id] = node;
    return node;
  },
  tool_completed(data, view) {
    view.streams[data.run_id]?.remove();
    const outputs = data.outputs || {};
    return item("tool", "🔧", el("span", {text: `${data.name} · ${ms(data.duration_ms)}`}),
      outputs.sql ? highlightSql(outputs.sql) : null,
      outputs.columns ? renderTable(outputs.columns, outputs.rows || []) : el("pre", {class: "output", text: String(outputs.output || "").slice(0, 2000)}),
      outputs.truncated ? el("p", {class: "muted", text: "More rows exist; the result was capped."}) : null);
  },
  run_error(data, view) {
    const started = view.streams[data.run_id];
    if (started) (started.closest ? started.closest("li") || started : started).remove();
    const outputs = data.outputs || {};
    return item("error", "⚠", el("span", {text: `${data.name} ${data.status}: ${data.error_type || ""}`}),
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
    return item("done", data.status === "success" ? "✔" : "✖",
      el("span", {text: `Trace ${data.status} · ${ms(data.duration_ms)} · ${data.total_runs} runs`}));
  },
  replay_started(data) {
    return item("replay", "⏪", el("span", {text: `Replay of ${data.events} events at ${data.speed === 0 ? "full speed" : data.speed + "×"}`}));
  },
  replay_completed() {
    return item("replay", "⏹", el("span", {text: "Replay finished"}));
  },
  error(data) {
    return item("error", "⚠", el("span", {text: `${data.error}: ${data.detail || ""}`}));
  },
};
