// The trace view of the detail page: the run tree (collapsible) beside a waterfall on a scaled
// time axis, and the selected run's details in a side panel. A stored trace's tree comes from its
// rows a page at a time (traces.pages.tree); live and replayed events update the same model, so
// they draw the same way. Trace data reaches the page
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

// The client's model of the run tree. Runs come from two sources, merged by run id: pages of the
// stored rows (traces.pages.tree: compact runs, each with its number of children, a parent's
// children placed at their positions) and events (live, replayed), which carry the whole run.
// A parent's children are an array that may have holes: runs not loaded yet, drawn as rows
// that ask for their page when they scroll into view.
export class RunTree {
  constructor() {
    this.reset();
  }

  reset() {
    this.runs = new Map();  // run_id -> run fields, plus order (arrival) and children (a count, from the rows)
    this.kids = new Map();  // parent run_id ("" for the top level) -> {ids: [...], next: cursor | null}
    this.order = 0;
    this.trace = {};
    this.collapsed = new Set();
    this.paged = false;  // true once pages of the rows are loaded: a run may have children not loaded yet
    this.span = {start: null, end: null};
    this.cached = null;
  }

  // The summary and the first pages the server embedded in the page.
  load(summary, pages) {
    this.paged = true;
    const started = time(summary.started_at);
    const ended = summary.duration_ms !== null && summary.duration_ms !== undefined && started !== null
      ? started + summary.duration_ms : time(summary.ended_at);
    this.trace = {started, ended, status: summary.status, request: summary.request, answer: summary.final_response,
      error: summary.error, errorType: summary.error_type, duration: summary.duration_ms};
    this.widen(started, ended);
    for (const page of pages) this.addPage(page);
  }

  kidsOf(key) {
    let kids = this.kids.get(key);
    if (!kids) { kids = {ids: [], next: null}; this.kids.set(key, kids); }
    return kids;
  }

  // A page of a run's children (or of the top level) from the server.
  addPage(page) {
    const key = page.parent || "";
    const kids = this.kidsOf(key);
    page.runs.forEach((row, i) => {
      const run = this.merge({run_id: row.id, parent_run_id: row.parent_id, name: row.name, run_type: row.run_type,
        status: row.status, start_time: row.start_time, end_time: row.end_time, duration_ms: row.duration_ms,
        tokens: row.tokens, cost: row.cost, model: row.model, error_type: row.error_type, children: row.children});
      const at = page.offset === undefined ? (kids.ids.includes(run.run_id) ? -1 : kids.ids.length) : page.offset + i;
      if (at < 0) return;
      const before = kids.ids.indexOf(run.run_id);
      if (before !== -1 && before !== at) kids.ids.splice(before, 1);  // appended by an event before its page came
      kids.ids[at] = run.run_id;
    });
    const parent = this.runs.get(page.parent);
    if (parent && parent.children !== undefined) {
      kids.next = null;  // its number of children is known: the rest are holes at their positions
    } else if (page.offset === undefined || page.offset + page.runs.length >= kids.ids.length) {
      kids.next = page.next;  // the top level, or a run whose children were not counted: more after them
    }
    if (parent && parent.children === undefined && !page.next) parent.children = kids.ids.length;
    this.cached = null;
  }

  merge(fields) {
    const known = this.runs.get(fields.run_id);
    const run = {...(known || {order: this.order++}), ...fields};
    if (known && known.children !== undefined && fields.children === undefined) run.children = known.children;
    this.runs.set(run.run_id, run);
    const end = time(run.end_time);
    this.widen(time(run.start_time), end);
    return run;
  }

  widen(start, end) {
    if (start !== null && (this.span.start === null || start < this.span.start)) this.span.start = start;
    const last = end ?? start;
    if (last !== null && (this.span.end === null || last > this.span.end)) this.span.end = last;
  }

  apply(message) {
    const data = message.data || {};
    const kind = message.event_type;
    if (kind === "trace_started") {
      this.trace = {...this.trace, started: time(message.timestamp), request: data.request, metadata: data.metadata || {},
        agent: data.agent_name, status: "running", startedAt: message.timestamp};
      if (!this.runs.size) this.widen(this.trace.started, null);
    } else if (kind === "trace_completed") {
      this.trace = {...this.trace, ended: time(message.timestamp), status: data.status, answer: data.final_response,
        error: data.error, errorType: data.error_type, duration: data.duration_ms, tokens: data.total_tokens,
        cost: data.total_cost};
    } else if (STARTED.has(kind) || ENDED.has(kind)) {
      const known = this.runs.get(data.run_id);
      const fields = {...data, detailed: true};
      if (kind === "think_completed") fields.usage = data.token_usage || null;
      if (!known && STARTED.has(kind)) fields.children = 0;  // begun while followed: its children come as events
      const run = this.merge(fields);
      if (!known || known.parent_run_id !== run.parent_run_id) this.place(run, known);
      else if (known.start_time !== run.start_time && !this.paged) this.place(run, known);
      if (!known && STARTED.has(kind)) this.kidsOf(run.run_id);
      if (this.paged && !known) {
        const parent = this.runs.get(run.parent_run_id);
        if (parent && parent.children !== undefined) parent.children += 1;
      }
    } else {
      return false;
    }
    this.cached = null;
    return true;
  }

  // A run from an event among its siblings: by start time then arrival; after the last loaded
  // position when its parent's children are not all loaded (a live run starts after them).
  place(run, known) {
    if (known) {
      const old = this.kidsOf(known.parent_run_id || "").ids;
      const at = old.indexOf(run.run_id);
      if (at !== -1) old.splice(at, 1);
    }
    const kids = this.kidsOf(run.parent_run_id || "");
    const parent = this.runs.get(run.parent_run_id);
    const total = Math.max(kids.ids.length, parent?.children ?? 0);
    if (this.paged && (kids.next || kids.ids.length < total || kids.ids.includes(undefined))) {
      kids.ids[Math.max(total, kids.ids.length)] = run.run_id;
      return;
    }
    const key = (r) => [time(r.start_time) ?? 0, r.order];
    const [start, order] = key(run);
    let low = 0;
    let high = kids.ids.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      const [s, o] = key(this.runs.get(kids.ids[mid]));
      if (s < start || (s === start && o < order)) low = mid + 1; else high = mid;
    }
    kids.ids.splice(low, 0, run.run_id);
  }

  childCount(run) {
    const loaded = (this.kids.get(run.run_id) || {ids: []}).ids.length;
    return Math.max(loaded, this.paged ? run.children ?? 0 : 0);
  }

  // Depth-first, every expanded run's children after it: {run, depth, hasChildren}, or a row not
  // loaded yet: {hole: parent, index, depth} at a known position, {more: parent, depth} after them.
  rows() {
    if (this.cached) return this.cached;
    const rows = [];
    const walk = (key, depth) => {
      const kids = this.kids.get(key) || {ids: [], next: null};
      const parent = key ? this.runs.get(key) : null;
      const total = Math.max(kids.ids.length, this.paged && parent ? parent.children ?? 0 : 0);
      for (let i = 0; i < total; i++) {
        const id = kids.ids[i];
        const run = id && this.runs.get(id);
        if (!run) { rows.push({hole: key, index: i, depth}); continue; }
        const count = this.childCount(run);
        const unknown = this.paged && run.children === undefined && !this.kids.has(run.run_id);
        rows.push({run, depth, hasChildren: count > 0 || unknown});
        if (!this.collapsed.has(run.run_id)) {
          if (unknown) rows.push({more: run.run_id, depth: depth + 1});
          else if (count) walk(run.run_id, depth + 1);
        }
      }
      if (kids.next) rows.push({more: key, after: kids.next, depth});
    };
    walk("", 0);
    // Runs whose parent is not known (yet): at the top level, as they came.
    for (const [key, kids] of this.kids) {
      if (key && !this.runs.has(key) && kids.ids.length) {
        for (const id of kids.ids) if (id && this.runs.has(id)) {
          const run = this.runs.get(id);
          rows.push({run, depth: 0, hasChildren: this.childCount(run) > 0});
          if (!this.collapsed.has(id)) walk(id, 1);
        }
      }
    }
    this.cached = rows;
    return rows;
  }

  toggle(runId) {
    if (this.collapsed.has(runId)) this.collapsed.delete(runId);
    else this.collapsed.add(runId);
    this.cached = null;
  }

  expand(runId) {
    if (this.collapsed.delete(runId)) this.cached = null;
  }

  // The time the trace spans: its own start and end (the summary), widened by every run seen.
  bounds(now) {
    let {start, end} = this.span;
    if (start === null) start = this.trace.started ?? null;
    if (start === null) return null;
    if (end === null || end < start) end = start;
    if (this.trace.status === "running") end = Math.max(end, now);
    return {start, end, span: Math.max(end - start, 1)};
  }
}

export const ROW_HEIGHT = 29;  // px, the border included: every row the same, so a row's place is its index
const MARGIN = 10;  // rows drawn above and below the visible ones

// The tree and waterfall, drawn a window at a time: only the rows in view (and a few on either
// side) are in the DOM, padding stands for the others. `source` loads what is not here yet:
// {children(parent, {offset, after}), run(runId)} returning promises of the server's JSON.
export class TraceTreeView {
  constructor(root, {onSelect, source} = {}) {
    this.root = root;
    this.scroller = root.querySelector("[data-scroller]") || root.querySelector(".spans");
    this.axis = root.querySelector("[data-axis]");
    this.body = root.querySelector("[data-spans]");
    this.panel = root.querySelector("[data-run-panel]");
    this.tree = new RunTree();
    this.selected = null;
    this.onSelect = onSelect || (() => {});
    this.source = source || null;
    this.details = new Map();  // run_id -> the run in full, as the server sent it
    this.loading = new Set();
    this.runsLoading = new Map();  // run ids → the run in full being read
    this.pending = false;
    this.body.addEventListener("click", (event) => this.clicked(event));
    this.body.addEventListener("keydown", (event) => this.key(event));
    this.scroller?.addEventListener("scroll", () => this.schedule(), {passive: true});
  }

  reset() {
    this.tree.reset();
    this.selected = null;
    this.draw();
    this.showTrace();
  }

  load(summary, pages) {
    this.tree.load(summary, pages);
    this.draw();
    this.showTrace();
  }

  apply(message) {
    if (!this.tree.apply(message)) return;
    this.schedule(() => {
      if (this.selected && this.tree.runs.has(this.selected)) this.refreshRun(this.selected);
      else if (!this.selected) this.showTrace();
    });
  }

  // Many changes in a burst (a replay at full speed, a scroll) draw once, on the next frame.
  schedule(after) {
    if (after) this.afterDraw = after;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
      const then = this.afterDraw;
      this.afterDraw = null;
      if (then) then();
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
    if (!rows.length) {
      this.body.style.paddingTop = this.body.style.paddingBottom = "0px";
      this.body.replaceChildren(el("p", {class: "muted empty", text: "No runs recorded."}));
      return;
    }
    const scroller = this.scroller;
    if (scroller && scroller.scrollTop > 0 && scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 2) {
      // At the end it stays at the end, as runs load above it or arrive live.
      this.body.style.paddingTop = "0px";
      this.body.style.paddingBottom = `${rows.length * ROW_HEIGHT}px`;
      this.body.replaceChildren();
      scroller.scrollTop = scroller.scrollHeight;
    }
    const [first, last] = this.window(rows.length);
    this.body.style.paddingTop = `${first * ROW_HEIGHT}px`;
    this.body.style.paddingBottom = `${(rows.length - last) * ROW_HEIGHT}px`;
    const shown = rows.slice(first, last);
    this.body.replaceChildren(...shown.map((row) => (row.run ? this.row(row, bounds) : this.placeholder(row))));
    this.fetchMissing(shown);
  }

  window(count) {
    const scroller = this.scroller;
    if (!scroller || !scroller.clientHeight) return [0, Math.min(count, 60)];
    const top = Math.max(0, scroller.scrollTop - this.bodyOffset());
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - MARGIN);
    const last = Math.min(count, first + Math.ceil(scroller.clientHeight / ROW_HEIGHT) + 2 * MARGIN);
    return [first, last];
  }

  // Where the rows start in the scrolled content (below the sticky axis).
  bodyOffset() {
    return this.body.getBoundingClientRect().top - this.scroller.getBoundingClientRect().top + this.scroller.scrollTop;
  }

  // Rows in view that are not loaded: one request per parent, for the positions in view.
  fetchMissing(shown) {
    if (!this.source) return;
    const holes = new Map();
    for (const row of shown) {
      if (row.hole !== undefined) {
        const range = holes.get(row.hole) || [row.index, row.index];
        holes.set(row.hole, [Math.min(range[0], row.index), Math.max(range[1], row.index)]);
      } else if (row.more !== undefined) {
        this.fetch(row.more, row.after ? {after: row.after} : {offset: 0});
      }
    }
    const firstPages = [];
    for (const [parent, [low, high]] of holes) {
      if (parent && low === 0 && high < 20 && this.source.firstPages) { firstPages.push(parent); continue; }
      const offset = Math.max(0, low - 20);
      this.fetch(parent, {offset, limit: Math.max(100, high - offset + 40)});
    }
    // The children of many small runs in view (each step's model and tool calls): one request.
    const wanted = firstPages.filter((parent) => !this.loading.has(`${parent}|0`));
    if (wanted.length) {
      for (const parent of wanted) this.loading.add(`${parent}|0`);
      this.source.firstPages(wanted).then((pages) => {
        for (const page of pages) this.tree.addPage(page);
        this.schedule();
      }).finally(() => setTimeout(() => { for (const parent of wanted) this.loading.delete(`${parent}|0`); }, 1000));
    }
  }

  fetch(parent, options) {
    const key = `${parent}|${options.after || options.offset}`;
    if (this.loading.has(key)) return Promise.resolve();
    this.loading.add(key);
    return this.source.children(parent || null, options).then((page) => {
      this.tree.addPage(page);
      this.schedule();
    }).finally(() => setTimeout(() => this.loading.delete(key), 1000));
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

  placeholder({depth}) {
    const label = el("div", {class: "span-label"}, el("span", {class: "toggle-space"}), el("span", {class: "muted", text: "Loading…"}));
    label.style.paddingLeft = `${depth * 1.1 + 0.3}rem`;
    return el("div", {class: "span-row span-loading", "aria-busy": "true"}, label, el("div", {class: "span-track"}));
  }

  row({run, depth, hasChildren}, bounds) {
    const collapsed = this.tree.collapsed.has(run.run_id);
    const toggle = hasChildren
      ? el("button", {type: "button", class: "toggle", "aria-label": "Collapse or expand",
        "aria-expanded": String(!collapsed), text: collapsed ? "▸" : "▾"})
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
    if (hasChildren) node.setAttribute("aria-expanded", String(!collapsed));
    if (run.run_id === this.selected) node.classList.add("selected", "selected-row");
    return node;
  }

  clicked(event) {
    const node = event.target.closest(".span-row[data-run]");
    if (!node) return;
    if (event.target.closest(".toggle")) {
      this.tree.toggle(node.dataset.run);
      this.draw();
      return;
    }
    this.select(node.dataset.run);
  }

  // Enter or space selects; up and down move the selection; left and right collapse and expand.
  key(event) {
    const node = event.target.closest(".span-row[data-run]");
    if (!node) return;
    const runId = node.dataset.run;
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); this.select(runId); return; }
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      event.preventDefault();
      if ((event.key === "ArrowLeft") !== this.tree.collapsed.has(runId)) this.tree.toggle(runId);
      this.draw();
      this.focus(runId);
      return;
    }
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    const rows = this.tree.rows();
    let at = rows.findIndex((row) => row.run && row.run.run_id === runId);
    const step = event.key === "ArrowDown" ? 1 : -1;
    do at += step; while (at >= 0 && at < rows.length && !rows[at].run);
    if (at < 0 || at >= rows.length) return;
    this.select(rows[at].run.run_id);
    this.focus(rows[at].run.run_id);
  }

  focus(runId) {
    this.body.querySelector(`[data-run="${CSS.escape(runId)}"]`)?.focus({preventScroll: true});
  }

  // Scrolls the run's row into the middle of the view (drawing that window).
  scrollTo(runId) {
    const index = this.tree.rows().findIndex((row) => row.run && row.run.run_id === runId);
    if (index < 0 || !this.scroller) return;
    this.draw();  // the padding for every row first: a scroll past the last drawn height would be cut short
    const top = index * ROW_HEIGHT + this.bodyOffset();
    if (top < this.scroller.scrollTop + ROW_HEIGHT || top > this.scroller.scrollTop + this.scroller.clientHeight - 2 * ROW_HEIGHT) {
      this.scroller.scrollTop = Math.max(0, top - this.scroller.clientHeight / 2);
    }
    this.draw();
  }

  select(runId) {
    this.selected = runId;
    for (const node of this.body.querySelectorAll(".span-row.selected")) node.classList.remove("selected");
    this.body.querySelector(`[data-run="${CSS.escape(runId)}"]`)?.classList.add("selected");
    this.showRun(runId);
    this.onSelect(runId);
  }

  // Selects a run wherever it is in the tree: its ancestors expanded and the pages that hold it
  // and them loaded. Its path, with each one's position, comes with the run in full, or with a
  // search hit: then the run in full is read alongside the pages, not before them.
  async reveal(runId, path = null) {
    let detail = this.details.get(runId);
    if (!detail && this.source && path) this.loadRun(runId);
    else if (!detail && this.source) {
      detail = await this.loadRun(runId);
    }
    path = path || (detail && detail.path);
    if (path) {
      await Promise.all(path.map((step) => {
        if (step.parent_id) this.tree.expand(step.parent_id);
        const kids = this.tree.kids.get(step.parent_id || "");
        if (kids && kids.ids[step.position] === step.id) return null;
        if (!step.parent_id) return this.loadTopLevelUntil(step.id);
        return this.fetch(step.parent_id, {offset: Math.max(0, step.position - 50), limit: 100});
      }));
    }
    this.scrollTo(runId);
    this.select(runId);
  }

  // The run in full, read once however many ask for it meanwhile.
  loadRun(runId) {
    if (!this.runsLoading.has(runId)) {
      this.runsLoading.set(runId, this.source.run(runId).then((found) => {
        if (found) this.details.set(runId, found);
        else (this.missing ||= new Set()).add(runId);  // not stored yet (a live run): what the events said
        return found;
      }).finally(() => this.runsLoading.delete(runId)));
    }
    return this.runsLoading.get(runId);
  }

  async loadTopLevelUntil(runId) {
    for (let tries = 0; tries < 50; tries++) {
      const kids = this.tree.kids.get("");
      if (!kids || kids.ids.includes(runId) || !kids.next) return;
      await this.fetch(null, {after: kids.next});
    }
  }

  refreshRun(runId) {
    if (this.details.has(runId) && !this.tree.runs.get(runId)?.detailed) return;
    this.showRun(runId);
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
    const detail = this.details.get(runId);
    const known = this.tree.runs.get(runId);
    if (!detail && !known) return;
    const run = detail ? {...known, ...fullRun(detail)} : known;
    const waiting = !detail && this.tree.paged && this.source && !this.missing?.has(runId);
    if (waiting) this.loadRun(runId).finally(() => { if (this.selected === runId) this.showRun(runId); });
    const parts = [
      el("h3", {}, el("span", {class: `chip chip-${run.run_type}`, text: TYPE_LABEL[run.run_type] || run.run_type}), " ",
        run.run_type === "agent" ? stepLabel(run.name) : run.name),
      el("p", {class: "run-facts"},
        el("span", {class: `badge badge-${run.status}`, text: run.status}), " ",
        el("span", {class: "muted", text: [formatDuration(run.duration_ms), run.model || (run.metadata || {}).model,
          run.usage ? `${run.usage.prompt_tokens} → ${run.usage.completion_tokens} tokens` : null,
          run.cost ? `$${formatNumber(run.cost)}` : null].filter(Boolean).join(" · ")})),
    ];
    if (waiting) { this.panel.replaceChildren(...parts, el("p", {class: "muted", text: "Loading…"})); return; }
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
    let messages = [];
    let tools = inputs.tools;
    let omitted = 0;
    if (run.conversation) {
      // Assembled by the server from the calls before this one, the newest messages of it.
      messages = run.conversation.messages;
      omitted = run.conversation.omitted;
      tools = tools || run.conversation.tools;
    } else if (inputs.messages_from === undefined) {
      messages = inputs.messages || [];  // the whole conversation on this call (traces from other agents)
    } else {
      const calls = [...this.tree.runs.values()].filter((r) => r.run_type === "think").sort((a, b) => a.order - b.order);
      for (const call of calls) {
        messages.push(...((call.inputs || {}).messages || []));
        if (call.run_id === run.run_id) break;
      }
      // The tool schema is recorded on the first call that offered it (and again when it changes).
      if (!tools && inputs.tool_names) {
        for (const call of calls) {
          if (call.run_id === run.run_id) break;
          if ((call.inputs || {}).tools) tools = call.inputs.tools;
        }
      }
    }
    const parameters = (run.metadata || {}).parameters;
    return [
      section(`Messages sent (${inputs.message_count ?? messages.length})`,
        omitted ? el("p", {class: "muted", text: `${omitted} earlier messages not shown`}) : null,
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

function fullRun(detail) {
  return {run_id: detail.id, parent_run_id: detail.parent_id, name: detail.name, run_type: detail.run_type,
    status: detail.status, start_time: detail.start_time, end_time: detail.end_time, duration_ms: detail.duration_ms,
    inputs: detail.inputs, outputs: detail.outputs, metadata: detail.metadata, error: detail.error,
    error_type: detail.error_type, usage: detail.usage, cost: detail.cost, model: detail.model,
    conversation: detail.conversation};
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
