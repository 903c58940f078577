// Metrics: the gateway's /metrics over time (since the page was opened, the last hour at
// most), drawn with uPlot: active runs by state, the work queue per tag, and completions and
// failures per minute; KPIs above them.

import { h, replace } from "./dom.js";
import { number } from "./format.js";
import { t } from "./i18n.js";
import { subscribe } from "./metrics_store.js";

const ACTIVE = ["PENDING", "RUNNING", "CANCELLING"];
const PALETTE = ["--blue-dot", "--amber-dot", "--green-dot", "--red-dot", "--accent", "--grey-dot"];

let uplotLoading = null;

/** uPlot, loaded on first use (the runs pages never pay for it). */
function loadUplot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!uplotLoading) {
    uplotLoading = new Promise((resolve, reject) => {
      const css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = "/static/vendor/uPlot.min.css";
      document.head.appendChild(css);
      const script = document.createElement("script");
      script.src = "/static/vendor/uPlot.iife.min.js";
      script.onload = () => resolve(window.uPlot);
      script.onerror = () => {
        uplotLoading = null;
        reject(new Error("uPlot did not load"));
      };
      document.head.appendChild(script);
    });
  }
  return uplotLoading;
}

function color(i) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(PALETTE[i % PALETTE.length]).trim();
  return v || "#888";
}

function textColor() {
  return getComputedStyle(document.documentElement).getPropertyValue("--text-muted").trim() || "#666";
}

/** Per-minute rate of a counter between consecutive samples (never negative: runs expire). */
function perMinute(samples, pick) {
  const out = [null];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].t - samples[i - 1].t;
    const dv = pick(samples[i]) - pick(samples[i - 1]);
    out.push(dt > 0 ? Math.max(0, (dv / dt) * 60) : null);
  }
  return out;
}

export function metricsView(root) {
  const kpis = h("div", { class: "kpis", id: "metrics-kpis" });
  const errorBox = h("p", { class: "error", id: "metrics-error", hidden: true });
  const note = h("p", { class: "muted small", id: "metrics-note" });
  const charts = [
    { id: "chart-active", title: t("metrics.active"), plot: null, key: "" },
    { id: "chart-queue", title: t("metrics.queue"), plot: null, key: "" },
    { id: "chart-rate", title: t("metrics.rate"), plot: null, key: "" },
  ];
  const boxes = charts.map((c) => h("div", { class: "chart", id: c.id }));
  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-metrics" },
      h("div", { class: "view-head" }, h("h1", {}, t("metrics.title"))),
      errorBox,
      kpis,
      charts.map((c, i) => h("section", { class: "card" }, h("h2", {}, c.title), boxes[i])),
      note
    )
  );

  let uPlot = null;
  let stopped = false;
  let latest = [];

  function kpi(id, label, value) {
    return h("div", { class: "kpi", id }, h("div", { class: "kpi-value" }, value), h("div", { class: "kpi-label" }, label));
  }

  function renderKpis(samples) {
    const s = samples[samples.length - 1];
    if (!s) return;
    const queued = Object.values(s.queue).reduce((a, b) => a + b, 0);
    replace(
      kpis,
      kpi("kpi-running", t("metrics.kpi_running"), number(s.runs.RUNNING || 0)),
      kpi("kpi-pending", t("metrics.kpi_pending"), number(s.runs.PENDING || 0)),
      kpi("kpi-queued", t("metrics.kpi_queued"), number(queued)),
      kpi("kpi-completed-today", t("metrics.kpi_completed_today"), number(s.today.COMPLETED || 0)),
      kpi("kpi-failed-today", t("metrics.kpi_failed_today"), number(s.today.FAILED || 0)),
      kpi("kpi-workers", t("metrics.kpi_workers"), s.workers === null ? "—" : number(s.workers)),
      kpi("kpi-dlq", t("metrics.kpi_dlq"), s.dlq === null ? "—" : number(s.dlq))
    );
  }

  function seriesData(samples) {
    const xs = samples.map((s) => s.t);
    const tags = [...new Set(samples.flatMap((s) => Object.keys(s.queue)))].sort();
    return [
      {
        labels: ACTIVE.map((st) => t(`status.${st}`)),
        data: [xs, ...ACTIVE.map((st) => samples.map((s) => s.runs[st] || 0))],
      },
      {
        labels: tags.length ? tags : [t("metrics.no_queue")],
        data: [xs, ...(tags.length ? tags.map((tag) => samples.map((s) => s.queue[tag] || 0)) : [samples.map(() => 0)])],
      },
      {
        labels: [t("metrics.completed_per_min"), t("metrics.failed_per_min")],
        data: [xs, perMinute(samples, (s) => s.runs.COMPLETED || 0), perMinute(samples, (s) => s.runs.FAILED || 0)],
      },
    ];
  }

  function draw() {
    if (!uPlot || stopped) return;
    const sets = seriesData(latest);
    charts.forEach((c, i) => {
      const { labels, data } = sets[i];
      const key = labels.join("\u0000");
      const width = Math.max(300, boxes[i].clientWidth || 800);
      if (!c.plot || c.key !== key) {
        if (c.plot) c.plot.destroy();
        c.key = key;
        const axis = { stroke: textColor(), grid: { stroke: "rgba(128,128,128,0.15)" }, ticks: { stroke: "rgba(128,128,128,0.25)" } };
        c.plot = new uPlot(
          {
            width,
            height: 200,
            series: [{}, ...labels.map((label, j) => ({ label, stroke: color(j), width: 2, points: { show: false } }))],
            axes: [axis, { ...axis, size: 50 }],
            scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
            legend: { live: false },
          },
          data,
          boxes[i]
        );
      } else {
        c.plot.setData(data);
        if (Math.abs(c.plot.width - width) > 4) c.plot.setSize({ width, height: 200 });
      }
    });
  }

  const onResize = () => draw();
  window.addEventListener("resize", onResize);

  const unsubscribe = subscribe((samples, err) => {
    if (stopped) return;
    latest = samples.slice();
    errorBox.hidden = !err;
    if (err) errorBox.textContent = t("error.load", { detail: err.detail || err.message });
    note.textContent = t("metrics.note", { n: samples.length });
    renderKpis(samples);
    draw();
  });

  loadUplot()
    .then((u) => {
      uPlot = u;
      draw();
    })
    .catch((err) => {
      errorBox.hidden = false;
      errorBox.textContent = t("error.load", { detail: err.message });
    });

  return () => {
    stopped = true;
    unsubscribe();
    window.removeEventListener("resize", onResize);
    for (const c of charts) if (c.plot) c.plot.destroy();
  };
}
