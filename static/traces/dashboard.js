// The dashboard's charts, drawn with uPlot: stacked bars for every bucket of the range (zero
// where nothing ran), a time axis with dates in the server's time zone, and the values of the
// bucket under the cursor in the legend. Numbers are formatted as the page's tables format them.
// A chart whose data the page does not hold (accuracy by dataset) is fetched from its data-source.
import uPlot from "../vendor/uPlot.esm.js";

const data = JSON.parse(document.getElementById("dashboard-data").textContent);
const locale = document.documentElement.lang || "en";
const STATUS_COLORS = {success: "#22c55e", error: "#ef4444", cancelled: "#f59e0b", running: "#3b82f6"};
const PALETTE = ["#6366f1", "#14b8a6", "#f97316", "#ec4899", "#84cc16", "#0ea5e9", "#a855f7", "#94a3b8"];
const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7];
const HEIGHT = 220;

function dateFormat(options) {
  try {
    return new Intl.DateTimeFormat(locale, {...options, timeZone: data.time_zone});
  } catch {
    return new Intl.DateTimeFormat(locale, options);  // a zone name this browser does not know
  }
}

const day = dateFormat({month: "short", day: "numeric"});
const fullDay = dateFormat({weekday: "short", year: "numeric", month: "short", day: "numeric"});
const hour = dateFormat({hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
const integer = new Intl.NumberFormat(locale, {maximumFractionDigits: 0});

const tickLabel = (seconds) => {
  const moment = new Date(seconds * 1000);
  return data.hourly ? `${hour.format(moment)}\n${day.format(moment)}` : day.format(moment);
};
const bucketLabel = (seconds) => {
  const moment = new Date(seconds * 1000);
  return data.hourly ? `${fullDay.format(moment)} ${hour.format(moment)}` : fullDay.format(moment);
};

function formatCost(value) {
  const amount = Math.abs(value);
  if (amount === 0) return "$0";
  if (amount >= 1) return "$" + value.toLocaleString(locale, {minimumFractionDigits: 2, maximumFractionDigits: 2});
  if (amount >= 0.0001) return "$" + value.toFixed(4);
  return "<$0.0001";
}

const formatCount = (value) => integer.format(value);
// An axis's dollar ticks, all with the places their step needs.
const dollars = (value, step) => "$" + value.toFixed(Math.min(6, Math.max(2, -Math.floor(Math.log10(step || 1)))));

// Bucket starts to label: as many as fit, counted back from the current bucket so that it always has one.
function tickStarts(u) {
  const fit = Math.max(1, Math.floor(u.bbox.width / uPlot.pxRatio / (data.hourly ? 64 : 56)));
  const every = Math.ceil(data.x.length / fit);
  return data.x.filter((_, i) => (data.x.length - 1 - i) % every === 0);
}

function stackedBars(root, series, format, integers) {
  const x = data.x;
  const half = data.bucket_seconds / 2;
  let sums = x.map(() => 0);
  const stacked = series.map((s) => (sums = sums.map((sum, i) => sum + (s.values[i] || 0))));
  // Each series is drawn as a bar from zero to its running total, the tallest first, so each
  // lower part paints over it; the legend reads from the top of the stack down.
  const order = series.map((_, i) => i).reverse();
  const bars = uPlot.paths.bars({size: [0.8, 64], align: 0});
  const options = {
    width: root.clientWidth || 600,
    height: HEIGHT,
    scales: {
      x: {time: true, range: () => [x[0] - half, x[x.length - 1] + half]},
      y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]},
    },
    series: [
      {label: data.hourly ? "Hour" : "Day", value: (u, seconds) => (seconds == null ? "–" : bucketLabel(seconds))},
      ...order.map((i) => ({
        label: series[i].label,
        stroke: series[i].color,
        fill: series[i].color,
        width: 0,
        paths: bars,
        points: {show: false},
        value: (u, total, seriesIndex, index) => (index == null ? "–" : format(series[i].values[index] || 0)),
      })),
    ],
    axes: [
      {
        splits: tickStarts,
        values: (u, splits) => {
          const labels = splits.map(tickLabel);
          root.dataset.xTicks = JSON.stringify(labels);  // what the axis shows, for reading without the canvas
          return labels;
        },
        gap: 4,
        size: data.hourly ? 48 : 32,
      },
      integers
        ? {values: (u, splits) => splits.map(format), size: 72, incrs: COUNT_INCRS}
        : {values: (u, splits, axis, space, step) => splits.map((v) => dollars(v, step)), size: 72},
    ],
    cursor: {drag: {x: false, y: false}, points: {show: false}},
    legend: {live: true},
  };
  const chart = new uPlot(options, [x, ...order.map((i) => stacked[i])], root);
  new ResizeObserver(() => {
    if (root.clientWidth && root.clientWidth !== chart.width) chart.setSize({width: root.clientWidth, height: HEIGHT});
  }).observe(root);
  return chart;
}

function chart(name, series, format, integers = true) {
  const root = document.querySelector(`[data-chart="${name}"]`);
  if (!root) return null;
  if (!series.length) {
    root.append(Object.assign(document.createElement("p"), {className: "muted empty", textContent: "No runs in this range."}));
    return null;
  }
  return stackedBars(root, series, format, integers);
}

const byModel = (values) => data.models.map((model, i) => ({label: model, color: PALETTE[i % PALETTE.length], values: values[i]}));

const percent = new Intl.NumberFormat(locale, {style: "percent", maximumFractionDigits: 1});
const when = dateFormat({year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23"});

// A chart the page names by its data's address ([data-source]): one line per series over points
// in time, values 0 to 1, a series without a value at a point drawn through it.
function lineChart(root, points) {
  const options = {
    width: root.clientWidth || 600,
    height: HEIGHT,
    scales: {
      x: {time: true, range: (u, min, max) => (min === max ? [min - 86400, max + 86400] : [min, max])},
      y: {range: () => [0, 1]},
    },
    series: [
      {label: "Started", value: (u, seconds) => (seconds == null ? "–" : when.format(new Date(seconds * 1000)))},
      ...points.series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        spanGaps: true,
        points: {show: true, size: 6},
        value: (u, v) => (v == null ? "–" : percent.format(v)),
      })),
    ],
    axes: [
      {
        // Ticks less than a day apart are labelled with their hour.
        values: (u, splits, axis, space, step) => splits.map((seconds) => {
          const moment = new Date(seconds * 1000);
          return step < 86400 ? `${hour.format(moment)}\n${day.format(moment)}` : day.format(moment);
        }),
        gap: 4,
        size: 48,
      },
      {values: (u, splits) => splits.map((v) => percent.format(v)), size: 56, incrs: [0.1, 0.2, 0.25, 0.5]},
    ],
    cursor: {drag: {x: false, y: false}},
    legend: {live: true},
  };
  const chart = new uPlot(options, [points.x, ...points.series.map((s) => s.values)], root);
  new ResizeObserver(() => {
    if (root.clientWidth && root.clientWidth !== chart.width) chart.setSize({width: root.clientWidth, height: HEIGHT});
  }).observe(root);
  return chart;
}

async function sourcedChart(name) {
  const root = document.querySelector(`[data-chart="${name}"][data-source]`);
  if (!root) return null;
  const response = await fetch(root.dataset.source, {headers: {Accept: "application/json"}});
  if (!response.ok) throw new Error(`${root.dataset.source}: ${response.status}`);
  const points = await response.json();
  if (!points.series.length) {
    root.append(Object.assign(document.createElement("p"), {className: "muted empty", textContent: "No experiments yet."}));
    return null;
  }
  return lineChart(root, points);
}

window.tracesite = Object.assign(window.tracesite || {}, {
  charts: {
    status: chart(
      "status",
      Object.keys(STATUS_COLORS).map((status) => ({label: status, color: STATUS_COLORS[status], values: data.status[status]})),
      formatCount,
    ),
    traces: chart("traces", byModel(data.traces), formatCount),
    tokens: chart("tokens", byModel(data.tokens), formatCount),
    cost: chart("cost", byModel(data.cost), formatCost, false),
  },
});
sourcedChart("accuracy").then((accuracy) => {
  window.tracesite.charts.accuracy = accuracy;
});
