// A run's live task log (GET /runs/{id}/logs/watch): every line its tasks write to stdout and
// stderr, as they write it, filtered by task and stream, following the end. The stream resumes
// where it stopped (Last-Event-ID) after a reconnect and ends once the run is terminal and all
// its lines were delivered. The page keeps the last MAX_LINES lines; the API and
// `pyoco-client logs` have them all.

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import { number } from "./format.js";
import { t } from "./i18n.js";

export const MAX_LINES = 5000;

function clock(ts) {
  if (typeof ts !== "number" || !isFinite(ts)) return "";
  const d = new Date(ts * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** The log card of the run view: `{ el, setTasks(names), stop() }`. */
export function runLogs(runId) {
  const controller = new AbortController();
  const lines = []; // every kept item, oldest first
  let dropped = 0; // items no longer kept (MAX_LINES)
  let lastId = null; // the last event id seen (the resume point)
  let pending = []; // items not drawn yet
  let frame = 0;
  let state = "connecting";

  const taskSelect = h("select", { id: "log-task" }, h("option", { value: "" }, t("logs.all_tasks")));
  const streamSelect = h(
    "select",
    { id: "log-stream" },
    h("option", { value: "" }, t("logs.all_streams")),
    h("option", { value: "stdout" }, "stdout"),
    h("option", { value: "stderr" }, "stderr")
  );
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const live = h("span", { class: "live", id: "log-live", dataset: { state } }, t("live.connecting"));
  const count = h("span", { class: "muted small", id: "log-count" });
  const box = h("div", { class: "log", id: "run-log", role: "log", "aria-live": "off", tabindex: 0 });
  const empty = h("p", { class: "muted", id: "log-empty" }, t("logs.empty"));
  const note = h("p", { class: "muted small", id: "log-dropped", hidden: true });

  const el = h(
    "section",
    { class: "card card-log", id: "run-logs" },
    h(
      "div",
      { class: "card-head" },
      h("h2", {}, t("logs.title")),
      live,
      h("span", { class: "spacer" }),
      h("label", { class: "inline" }, h("span", {}, t("logs.task")), taskSelect),
      h("label", { class: "inline" }, h("span", {}, t("logs.stream")), streamSelect),
      h("label", { class: "inline" }, follow, h("span", {}, t("logs.follow")))
    ),
    note,
    box,
    empty,
    count
  );

  const visible = (item) => (!taskSelect.value || item.task === taskSelect.value) && (!streamSelect.value || item.stream === streamSelect.value);

  function lineEl(item) {
    return h(
      "div",
      { class: "log-line", dataset: { stream: item.stream || "stdout", seq: String(item.seq) } },
      h("span", { class: "log-ts" }, clock(item.ts)),
      h("span", { class: "log-task" }, item.task || "—"),
      h("span", { class: "log-text" }, item.line ?? "")
    );
  }

  function updateCounts() {
    count.textContent = t("logs.count", { n: number(lines.length + dropped) });
    note.hidden = dropped === 0;
    note.textContent = t("logs.dropped", { n: number(dropped), max: number(MAX_LINES) });
    empty.hidden = lines.length + dropped > 0;
  }

  function draw() {
    frame = 0;
    const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    const items = pending.filter(visible);
    pending = [];
    if (items.length) box.append(...items.map(lineEl));
    while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
    updateCounts();
    if (follow.checked && (atEnd || items.length)) box.scrollTop = box.scrollHeight;
  }

  function redraw() {
    pending = [];
    replace(box, lines.filter(visible).slice(-MAX_LINES).map(lineEl));
    updateCounts();
    if (follow.checked) box.scrollTop = box.scrollHeight;
  }

  function add(item) {
    lines.push(item);
    if (lines.length > MAX_LINES) {
      lines.shift();
      dropped += 1;
    }
    pending.push(item);
    if (item.task && ![...taskSelect.options].some((o) => o.value === item.task)) taskSelect.append(h("option", { value: item.task }, item.task));
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function setState(next) {
    state = next;
    live.dataset.state = next;
    live.textContent = t(`live.${next}`);
  }

  taskSelect.addEventListener("change", redraw);
  streamSelect.addEventListener("change", redraw);
  follow.addEventListener("change", () => follow.checked && (box.scrollTop = box.scrollHeight));

  async function run() {
    let delay = 0;
    while (!controller.signal.aborted) {
      if (delay) await new Promise((r) => setTimeout(r, delay));
      if (controller.signal.aborted) return;
      try {
        const extra = lastId !== null ? { "Last-Event-ID": lastId } : undefined;
        const res = await api.stream(`/runs/${encodeURIComponent(runId)}/logs/watch`, { signal: controller.signal, headers: extra });
        setState("streaming");
        let ended = false;
        for await (const ev of api.sseEvents(res.body, controller.signal)) {
          if (ev.id !== undefined && ev.id !== "") lastId = ev.id;
          if (ev.event === "log") {
            try {
              add(JSON.parse(ev.data));
            } catch {
              // not an item: skip
            }
          } else if (ev.event === "end") {
            ended = true;
          }
        }
        if (controller.signal.aborted) return;
        if (ended) {
          setState("done");
          if (frame) {
            cancelAnimationFrame(frame);
            draw();
          }
          updateCounts();
          return;
        }
        setState("reconnecting");
        delay = 300;
      } catch (err) {
        if (controller.signal.aborted) return;
        setState("error");
        live.title = err.detail || err.message || "";
        // A gateway without live logs (404 on the route), or a run we may not see: stop.
        if (err.status === 404 || err.status === 401 || err.status === 403) return;
        delay = 1500;
      }
    }
  }

  updateCounts();
  run();

  return {
    el,
    /** The run's task names (from its snapshot), so the filter lists tasks with no line yet. */
    setTasks(names) {
      for (const name of names) {
        if (![...taskSelect.options].some((o) => o.value === name)) taskSelect.append(h("option", { value: name }, name));
      }
    },
    stop() {
      controller.abort();
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
