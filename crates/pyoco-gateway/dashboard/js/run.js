// One run, live through GET /runs/{id}/watch: its task graph (dagre layout, drawn in SVG),
// a timeline of its tasks, every task record (inputs, output, error, traceback, stdout,
// stderr), its live task log (logs.js), its metadata, and cancel.

import * as api from "./api.js";
import { confirmDialog } from "./dialog.js";
import { h, s, replace } from "./dom.js";
import { dateTime, duration, pretty, stateClass, TERMINAL } from "./format.js";
import { t } from "./i18n.js";
import { runLogs } from "./logs.js";

/** Flows with more tasks than this are listed, not drawn (layout cost and legibility). */
const MAX_GRAPH_NODES = 400;
const NODE_HEIGHT = 34;

export function runView(root, runId, { navigate }) {
  const controller = new AbortController();
  let snap = null;
  let selected = null;
  let graphKey = "";
  let graphNodes = new Map();
  let tick = null;

  const title = h("h1", { class: "run-title", id: "run-title" }, runId);
  const badge = h("span", { class: "badge", id: "run-status", dataset: { state: "unknown" } }, "…");
  const live = h("span", { class: "live", id: "run-live", dataset: { state: "connecting" } }, t("live.connecting"));
  const cancelBtn = h("button", { type: "button", class: "btn btn-danger", id: "run-cancel", disabled: true }, t("run.cancel"));
  const errorBox = h("p", { class: "error", id: "run-error", hidden: true });
  const meta = h("dl", { class: "meta", id: "run-meta" });
  const graphBox = h("div", { class: "graph", id: "run-graph" });
  const timelineBox = h("div", { class: "timeline", id: "run-timeline" });
  const tasksBody = h("tbody", { id: "run-tasks" });
  const detailBox = h("div", { class: "task-detail", id: "task-detail" });
  const paramsBox = h("pre", { class: "code", id: "run-params" });
  const dialog = confirmDialog(t("run.cancel_yes"), t("run.cancel_no"));
  const logs = runLogs(runId);

  cancelBtn.addEventListener("click", async () => {
    if (!(await dialog.ask(t("run.cancel_confirm", { run: runId })))) return;
    cancelBtn.disabled = true;
    try {
      const answer = await api.post(`/runs/${encodeURIComponent(runId)}/cancel`, { json: {} });
      if (answer && answer.status) render({ ...(snap || {}), ...answer, task_records: snap && snap.task_records });
    } catch (err) {
      showError(err);
      updateCancel();
    }
  });

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-run" },
      h(
        "div",
        { class: "view-head" },
        h("a", { href: "#/runs", class: "back" }, t("run.back")),
        title,
        badge,
        live,
        h("span", { class: "spacer" }),
        cancelBtn
      ),
      errorBox,
      h(
        "div",
        { class: "run-grid" },
        h("section", { class: "card card-graph" }, h("h2", {}, t("run.graph")), graphBox),
        h("section", { class: "card card-meta" }, h("h2", {}, t("run.details")), meta, h("h3", {}, t("run.params")), paramsBox)
      ),
      h("section", { class: "card" }, h("h2", {}, t("run.timeline")), timelineBox),
      h(
        "div",
        { class: "run-grid tasks-grid" },
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("run.tasks")),
          h(
            "table",
            { class: "tasks" },
            h(
              "thead",
              {},
              h("tr", {}, h("th", {}, t("run.task")), h("th", {}, t("run.state")), h("th", {}, t("run.started")), h("th", {}, t("run.took")))
            ),
            tasksBody
          )
        ),
        h("section", { class: "card" }, h("h2", {}, t("run.task_detail")), detailBox)
      ),
      logs.el,
      dialog.el
    )
  );

  function showError(err) {
    errorBox.hidden = !err;
    if (err) errorBox.textContent = err.status === 404 ? t("run.not_found") : t("error.load", { detail: err.detail || err.message });
  }

  function updateCancel() {
    const status = snap && snap.status;
    cancelBtn.disabled = !(status === "PENDING" || status === "RUNNING");
    cancelBtn.hidden = !!status && TERMINAL.has(status);
  }

  function render(next) {
    snap = next;
    document.title = `${snap.flow_name || runId} · pyoco-server`;
    title.textContent = snap.flow_name || runId;
    badge.dataset.state = stateClass(snap.status);
    badge.textContent = t(`status.${snap.status}`);
    updateCancel();
    renderMeta();
    renderGraph();
    renderTimeline();
    renderTasks();
    renderDetail();
    logs.setTasks(taskNames());
  }

  function renderMeta() {
    const end = snap.end_time || (TERMINAL.has(snap.status) ? snap.updated_at : null);
    const rows = [
      ["run.run_id", h("span", { class: "mono" }, snap.run_id || runId)],
      ["run.flow", snap.flow_name || "—"],
      ["run.tag", snap.tag || "—"],
      ["run.tags", (snap.tags || []).join(", ") || "—"],
      ["run.worker", snap.worker_id ? h("a", { href: "#/workers", class: "mono" }, snap.worker_id) : "—"],
      ["run.attempt", snap.attempt ?? "—"],
      ["run.start", dateTime(snap.start_time)],
      ["run.end", dateTime(end)],
      ["run.took", snap.start_time ? duration((end || Date.now() / 1000) - snap.start_time) : "—"],
      ["run.updated", dateTime(snap.updated_at)],
      ["run.heartbeat", dateTime(snap.heartbeat_at)],
    ];
    if (snap.cancel_requested_at) rows.push(["run.cancel_requested", `${dateTime(snap.cancel_requested_at)} ${snap.cancel_requested_by || ""}`]);
    if (snap.schedule_id) rows.push(["run.schedule", h("a", { class: "mono", href: `#/runs?schedule=${encodeURIComponent(snap.schedule_id)}` }, String(snap.schedule_id).slice(0, 8))]);
    if (snap.replayed_from) rows.push(["run.replayed_from", h("a", { class: "mono", href: "#/dlq" }, String(snap.replayed_from))]);
    if (snap.workflow_yaml_sha256) rows.push(["run.yaml", h("span", { class: "mono" }, `sha256 ${String(snap.workflow_yaml_sha256).slice(0, 16)}… · ${snap.workflow_yaml_bytes ?? "?"} B`)]);
    if (snap.tenant_id) rows.push(["run.tenant", snap.tenant_id]);
    if (snap.error) rows.push(["run.error", h("span", { class: "error-text", id: "run-error-text" }, snap.error)]);
    if (snap.task_records_truncated) rows.push(["run.truncated", t("run.truncated_note")]);
    replace(meta, rows.map(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, v)]));
    paramsBox.textContent = pretty(snap.params || {});
  }

  function taskNames() {
    const names = Object.keys(snap.tasks || {});
    for (const n of Object.keys(snap.task_records || {})) if (!names.includes(n)) names.push(n);
    return names;
  }

  function taskState(name) {
    const rec = (snap.task_records || {})[name];
    return (rec && rec.state) || (snap.tasks || {})[name] || "PENDING";
  }

  function renderGraph() {
    const names = taskNames();
    const edges = Array.isArray(snap.task_edges) ? snap.task_edges.filter((e) => Array.isArray(e) && e.length === 2) : [];
    const key = JSON.stringify([names, edges]);
    if (key !== graphKey) {
      graphKey = key;
      graphNodes = new Map();
      if (!names.length) {
        replace(graphBox, h("p", { class: "muted" }, t("run.no_tasks_yet")));
        return;
      }
      if (names.length > MAX_GRAPH_NODES) {
        replace(graphBox, h("p", { class: "muted" }, t("run.graph_too_large", { n: names.length })));
        return;
      }
      replace(graphBox, drawGraph(names, edges));
      if (!edges.length && names.length > 1) graphBox.appendChild(h("p", { class: "muted small" }, t("run.no_edges")));
    }
    for (const [name, node] of graphNodes) {
      const st = stateClass(taskState(name));
      if (node.dataset.state !== st) node.dataset.state = st;
      node.classList.toggle("selected", name === selected);
    }
  }

  function drawGraph(names, edges) {
    const g = new window.dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 46, marginx: 6, marginy: 6 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const name of names) g.setNode(name, { width: Math.min(240, Math.max(72, 16 + name.length * 7.4)), height: NODE_HEIGHT });
    for (const [a, b] of edges) if (g.hasNode(a) && g.hasNode(b)) g.setEdge(a, b);
    window.dagre.layout(g);
    const { width, height } = g.graph();
    const svg = s("svg", { viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, width: Math.ceil(width), height: Math.ceil(height), role: "img", "aria-label": t("run.graph") });
    svg.appendChild(
      s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0 0 L10 5 L0 10 z", class: "arrow" })))
    );
    for (const e of g.edges()) {
      const pts = g.edge(e).points || [];
      if (!pts.length) continue;
      let d = `M${pts[0].x} ${pts[0].y}`;
      for (let i = 1; i < pts.length; i++) d += ` L${pts[i].x} ${pts[i].y}`;
      svg.appendChild(s("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
    }
    for (const name of names) {
      const n = g.node(name);
      const label = name.length > 30 ? `${name.slice(0, 29)}…` : name;
      const node = s(
        "g",
        { class: "node", transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})`, dataset: { task: name, state: "pending" }, tabindex: 0, role: "button" },
        s("title", {}, name),
        s("rect", { width: n.width, height: n.height, rx: 7 }),
        s("text", { x: n.width / 2, y: n.height / 2, "dominant-baseline": "central", "text-anchor": "middle" }, label)
      );
      node.addEventListener("click", () => select(name));
      node.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") select(name);
      });
      graphNodes.set(name, node);
      svg.appendChild(node);
    }
    return svg;
  }

  function renderTimeline() {
    const recs = snap.task_records || {};
    const names = taskNames().filter((n) => recs[n] && typeof recs[n].started_at === "number");
    if (!names.length) {
      replace(timelineBox, h("p", { class: "muted" }, t("run.timeline_empty")));
      return;
    }
    const now = Date.now() / 1000;
    const t0 = Math.min(snap.start_time || Infinity, ...names.map((n) => recs[n].started_at));
    const t1 = Math.max(snap.end_time || 0, ...names.map((n) => recs[n].ended_at || (TERMINAL.has(snap.status) ? recs[n].started_at : now)));
    const span = Math.max(t1 - t0, 0.001);
    const labelW = 170;
    const W = 900;
    const rowH = 22;
    const H = names.length * rowH + 26;
    const x = (ts) => labelW + ((ts - t0) / span) * (W - labelW - 10);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "timeline-svg", preserveAspectRatio: "xMinYMin meet", role: "img", "aria-label": t("run.timeline") });
    for (let i = 0; i <= 4; i++) {
      const ts = t0 + (span * i) / 4;
      svg.appendChild(s("line", { x1: x(ts), x2: x(ts), y1: 0, y2: H - 18, class: "tick" }));
      svg.appendChild(s("text", { x: x(ts), y: H - 4, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "tick-label" }, `+${duration(ts - t0)}`));
    }
    names.forEach((name, i) => {
      const rec = recs[name];
      const end = rec.ended_at || (TERMINAL.has(snap.status) ? rec.started_at : now);
      const y = i * rowH + 3;
      const bar = s(
        "g",
        { class: "bar", dataset: { task: name, state: stateClass(rec.state) } },
        s("title", {}, `${name}: ${duration(end - rec.started_at)}`),
        s("text", { x: labelW - 8, y: y + rowH / 2 - 1, "text-anchor": "end", "dominant-baseline": "central", class: "bar-label" }, name.length > 22 ? `${name.slice(0, 21)}…` : name),
        s("rect", { x: x(rec.started_at), y, width: Math.max(2, x(end) - x(rec.started_at)), height: rowH - 6, rx: 3 })
      );
      bar.addEventListener("click", () => select(name));
      svg.appendChild(bar);
    });
    replace(timelineBox, svg);
  }

  function renderTasks() {
    const recs = snap.task_records || {};
    replace(
      tasksBody,
      taskNames().map((name) => {
        const rec = recs[name] || {};
        const st = taskState(name);
        const took = typeof rec.duration_ms === "number" ? duration(rec.duration_ms / 1000) : rec.started_at && !rec.ended_at ? duration(Date.now() / 1000 - rec.started_at) : "—";
        const tr = h(
          "tr",
          { class: ["task-row", name === selected && "selected"], dataset: { task: name } },
          h("td", { class: "mono" }, name),
          h("td", {}, h("span", { class: "badge", dataset: { state: stateClass(st) } }, t(`task.${st}`))),
          h("td", { class: "num" }, dateTime(rec.started_at)),
          h("td", { class: "num" }, took)
        );
        tr.addEventListener("click", () => select(name));
        return tr;
      })
    );
  }

  function select(name) {
    selected = name;
    renderGraph();
    renderTasks();
    renderDetail();
  }

  function renderDetail() {
    const names = taskNames();
    if (!selected || !names.includes(selected)) {
      // The failed task first, else the running one, else the first.
      selected =
        names.find((n) => taskState(n) === "FAILED") || names.find((n) => taskState(n) === "RUNNING") || names[0] || null;
      if (selected) {
        for (const [name, node] of graphNodes) node.classList.toggle("selected", name === selected);
        for (const tr of tasksBody.children) tr.classList.toggle("selected", tr.dataset.task === selected);
      }
    }
    if (!selected) {
      replace(detailBox, h("p", { class: "muted" }, t("run.no_tasks_yet")));
      return;
    }
    const rec = (snap.task_records || {})[selected] || {};
    const block = (key, value, id) =>
      value === undefined || value === null || value === "" ? null : [h("h3", {}, t(key)), h("pre", { class: "code", dataset: { field: id } }, pretty(value))];
    replace(
      detailBox,
      h("p", { class: "task-head" }, h("strong", { class: "mono", id: "task-name" }, selected), " ", h("span", { class: "badge", dataset: { state: stateClass(taskState(selected)) } }, t(`task.${taskState(selected)}`))),
      block("task.error", rec.error, "error"),
      block("task.traceback", rec.traceback, "traceback"),
      block("task.inputs", rec.inputs && Object.keys(rec.inputs).length ? rec.inputs : null, "inputs"),
      block("task.output", rec.output, "output"),
      block("task.stdout", rec.stdout, "stdout"),
      block("task.stderr", rec.stderr, "stderr"),
      snap.task_records_truncated ? h("p", { class: "muted" }, t("run.truncated_note")) : null,
      !Object.keys(rec).length ? h("p", { class: "muted" }, t("run.no_record")) : null
    );
  }

  function setLive(state, err) {
    live.dataset.state = state;
    live.textContent = t(`live.${state}`);
    if (state === "error" && err) showError(err);
    else if (state === "streaming") showError(null);
  }

  api
    .watchRun(runId, {
      signal: controller.signal,
      onState: setLive,
      onSnapshot: (next) => {
        render(next);
        if (TERMINAL.has(next.status)) {
          setLive("done");
          controller.abort();
        }
      },
    })
    .catch(() => {});

  // Running durations move on between snapshots.
  tick = setInterval(() => {
    if (snap && !TERMINAL.has(snap.status) && !document.hidden) {
      renderTimeline();
      renderMeta();
    }
  }, 1000);

  void navigate;
  return () => {
    controller.abort();
    clearInterval(tick);
    logs.stop();
  };
}
