// The runs list: filters, sort, cursor paging through GET /runs, status counts, and live
// updates by polling `updated_after` once a second (only changed runs come back, so 10,000
// stored runs cost what 10 do).

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import { ago, duration, opsRank, RUN_STATUSES, stateClass, TERMINAL, number } from "./format.js";
import { t } from "./i18n.js";
import { subscribe } from "./metrics_store.js";

const PAGE = 200;
const POLL_MS = 1000;
/** Pages followed at once when many runs changed between two polls. */
const MAX_CATCH_UP_PAGES = 5;

const SORTS = {
  ops: (a, b) => opsRank(a.status) - opsRank(b.status) || newer(a, b),
  updated: newer,
  started: (a, b) => (b.start_time || 0) - (a.start_time || 0) || newer(a, b),
  flow: (a, b) => String(a.flow_name || "").localeCompare(String(b.flow_name || "")) || newer(a, b),
  status: (a, b) => String(a.status).localeCompare(String(b.status)) || newer(a, b),
};

function newer(a, b) {
  return (b.updated_at || 0) - (a.updated_at || 0) || String(b.run_id).localeCompare(String(a.run_id));
}

/** Filters as they appear in the location hash (`#/runs?status=FAILED&flow=x`). */
function readFilters(params) {
  return {
    status: params.get("status") || "",
    flow: params.get("flow") || "",
    tag: params.get("tag") || "",
    worker: params.get("worker") || "",
    run: params.get("run") || "",
    schedule: params.get("schedule") || "",
    sort: SORTS[params.get("sort")] ? params.get("sort") : "ops",
  };
}

export function runsView(root, params, { navigate }) {
  const filters = readFilters(params);
  const runs = new Map();
  let nextCursor = null;
  let maxUpdated = 0;
  let stopped = false;
  let pollTimer = null;

  const countsBox = h("div", { class: "chips", id: "status-counts", role: "group" });
  const tbody = h("tbody", { id: "runs-body" });
  const empty = h("p", { class: "empty", id: "runs-empty", hidden: true }, t("runs.empty"));
  const more = h(
    "button",
    { type: "button", class: "btn", id: "runs-more", hidden: true, onclick: loadMore },
    t("runs.load_more")
  );
  const live = h("span", { class: "live", id: "runs-live", dataset: { state: "connecting" } }, t("live.connecting"));
  const errorBox = h("p", { class: "error", id: "runs-error", hidden: true });
  const shown = h("span", { class: "muted", id: "runs-shown" });

  const field = (name, label, input) =>
    h("label", { class: "field" }, h("span", {}, label), input);
  const statusSelect = h(
    "select",
    { id: "filter-status", name: "status" },
    h("option", { value: "" }, t("runs.all_statuses")),
    RUN_STATUSES.map((st) => h("option", { value: st, selected: st === filters.status }, t(`status.${st}`)))
  );
  const text = (id, name, value, placeholder) =>
    h("input", { id, name, type: "search", value, placeholder, autocomplete: "off", spellcheck: "false" });
  const flowInput = text("filter-flow", "flow", filters.flow, t("runs.flow_exact"));
  const tagInput = text("filter-tag", "tag", filters.tag, t("runs.tag_exact"));
  const workerInput = text("filter-worker", "worker", filters.worker, t("runs.contains"));
  const runInput = text("filter-run", "run", filters.run, t("runs.contains"));
  const sortSelect = h(
    "select",
    { id: "sort", name: "sort" },
    Object.keys(SORTS).map((k) => h("option", { value: k, selected: k === filters.sort }, t(`sort.${k}`)))
  );

  const form = h(
    "form",
    { class: "filters", id: "runs-filters", onsubmit: (e) => e.preventDefault() },
    field("status", t("runs.status"), statusSelect),
    field("flow", t("runs.flow"), flowInput),
    field("tag", t("runs.tag"), tagInput),
    field("worker", t("runs.worker"), workerInput),
    field("run", t("runs.run_id"), runInput),
    field("sort", t("runs.sort"), sortSelect),
    filters.schedule ? scheduleChip() : null
  );

  // Runs of one schedule (from the schedules view): shown as a chip that drops the filter.
  function scheduleChip() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v && k !== "schedule" && !(k === "sort" && v === "ops")) q.set(k, v);
    return h(
      "a",
      { class: "chip active filter-chip", id: "filter-schedule", href: `#/runs${q.toString() ? `?${q}` : ""}`, title: t("runs.schedule_clear") },
      h("span", { class: "chip-label" }, t("runs.schedule_filter")),
      h("span", { class: "mono" }, filters.schedule.slice(0, 8)),
      " ×"
    );
  }

  // Server-side filters (status, flow, tag) reload; client-side ones (worker, run, sort) only
  // re-render.
  const applyFilters = (reload) => {
    const next = {
      status: statusSelect.value,
      flow: flowInput.value.trim(),
      tag: tagInput.value.trim(),
      worker: workerInput.value.trim(),
      run: runInput.value.trim(),
      schedule: filters.schedule,
      sort: sortSelect.value,
    };
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(next)) if (v && !(k === "sort" && v === "ops")) q.set(k, v);
    const hash = `#/runs${q.toString() ? `?${q}` : ""}`;
    if (reload) {
      navigate(hash);
    } else {
      Object.assign(filters, next);
      history.replaceState(null, "", hash);
      render();
    }
  };
  statusSelect.addEventListener("change", () => applyFilters(true));
  sortSelect.addEventListener("change", () => applyFilters(false));
  for (const input of [flowInput, tagInput]) input.addEventListener("change", () => applyFilters(true));
  for (const input of [workerInput, runInput]) input.addEventListener("input", () => applyFilters(false));

  const table = h(
    "table",
    { class: "runs", id: "runs-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, t("runs.col_status")),
        h("th", {}, t("runs.col_flow")),
        h("th", {}, t("runs.col_run")),
        h("th", {}, t("runs.col_tag")),
        h("th", {}, t("runs.col_worker")),
        h("th", {}, t("runs.col_duration")),
        h("th", {}, t("runs.col_updated"))
      )
    ),
    tbody
  );

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-runs" },
      h(
        "div",
        { class: "view-head" },
        h("h1", {}, t("runs.title")),
        live,
        countsBox,
        h("span", { class: "spacer" }),
        h("a", { class: "btn btn-primary", href: "#/submit", id: "runs-submit" }, t("runs.submit"))
      ),
      form,
      errorBox,
      h("div", { class: "table-wrap" }, table),
      empty,
      h("div", { class: "table-foot" }, shown, more)
    )
  );

  function matches(run) {
    if (filters.status && run.status !== filters.status) return false;
    if (filters.flow && run.flow_name !== filters.flow) return false;
    if (filters.tag && run.tag !== filters.tag) return false;
    if (filters.schedule && run.schedule_id !== filters.schedule) return false;
    if (filters.worker && !String(run.worker_id || "").toLowerCase().includes(filters.worker.toLowerCase()))
      return false;
    if (filters.run && !String(run.run_id || "").toLowerCase().includes(filters.run.toLowerCase())) return false;
    return true;
  }

  function merge(items) {
    let changed = false;
    for (const item of items || []) {
      if (!item || typeof item.run_id !== "string") continue;
      const known = runs.get(item.run_id);
      if (!known || (item.updated_at || 0) >= (known.updated_at || 0)) {
        runs.set(item.run_id, item);
        changed = true;
      }
      if ((item.updated_at || 0) > maxUpdated) maxUpdated = item.updated_at;
    }
    return changed;
  }

  const rows = new Map();
  function row(run) {
    let tr = rows.get(run.run_id);
    const key = `${run.updated_at}|${run.status}`;
    if (tr && tr.dataset.key === key) return tr;
    const href = `#/runs/${encodeURIComponent(run.run_id)}`;
    const end = TERMINAL.has(run.status) ? run.end_time || run.updated_at : Date.now() / 1000;
    const took = run.start_time ? duration(end - run.start_time) : "—";
    const fresh = h(
      "tr",
      { dataset: { runId: run.run_id, status: run.status, key }, class: "run-row" },
      h("td", {}, h("span", { class: "badge", dataset: { state: stateClass(run.status) } }, t(`status.${run.status}`))),
      h("td", { class: "flow" }, h("a", { href }, run.flow_name || "—")),
      h("td", { class: "mono" }, h("a", { href, title: run.run_id }, String(run.run_id).slice(0, 8))),
      h("td", {}, run.tag || "—"),
      h("td", { class: "mono" }, run.worker_id || "—"),
      h("td", { class: "num" }, took),
      h("td", { class: "num", title: String(run.updated_at) }, ago(run.updated_at))
    );
    fresh.addEventListener("click", (e) => {
      if (e.target.closest("a")) return;
      navigate(href);
    });
    if (tr) tr.replaceWith(fresh);
    rows.set(run.run_id, fresh);
    return fresh;
  }

  function render() {
    const list = [...runs.values()].filter(matches).sort(SORTS[filters.sort]);
    const wanted = list.map(row);
    // Reorder with the fewest moves: only touch rows out of place.
    let cursor = tbody.firstChild;
    for (const tr of wanted) {
      if (tr === cursor) {
        cursor = cursor.nextSibling;
      } else {
        tbody.insertBefore(tr, cursor);
      }
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    empty.hidden = list.length > 0;
    more.hidden = !nextCursor;
    shown.textContent = t("runs.shown", { n: number(list.length), total: number(runs.size) });
  }

  function showError(err) {
    if (!err) {
      errorBox.hidden = true;
      return;
    }
    errorBox.hidden = false;
    errorBox.textContent = t("error.load", { detail: err.detail || err.message });
  }

  function setLive(state) {
    live.dataset.state = state;
    live.textContent = t(`live.${state}`);
  }

  const serverFilters = () => ({ status: filters.status, flow: filters.flow, tag: filters.tag, schedule_id: filters.schedule });

  async function load() {
    try {
      const page = await api.get(`/runs${api.query({ ...serverFilters(), include: "times", limit: PAGE, updated_after: 0 })}`);
      if (stopped) return;
      merge(page.items);
      nextCursor = page.next_cursor || null;
      showError(null);
      render();
      window.dispatchEvent(new CustomEvent("pyoco:runs-rendered", { detail: { count: runs.size } }));
      schedulePoll(POLL_MS);
    } catch (err) {
      if (stopped) return;
      showError(err);
      setLive("error");
      schedulePoll(3000, load);
    }
  }

  async function loadMore() {
    if (!nextCursor) return;
    more.disabled = true;
    try {
      const page = await api.get(
        `/runs${api.query({ ...serverFilters(), include: "times", limit: PAGE, cursor: nextCursor })}`
      );
      merge(page.items);
      nextCursor = page.next_cursor || null;
      render();
    } catch (err) {
      showError(err);
    } finally {
      more.disabled = false;
    }
  }

  // Live: what changed since the newest update seen. Without the status filter, so a run that
  // leaves the filtered status is seen leaving.
  async function poll() {
    if (stopped) return;
    if (document.hidden) {
      schedulePoll(POLL_MS);
      return;
    }
    try {
      let cursor;
      let changed = false;
      const since = maxUpdated;
      for (let i = 0; i < MAX_CATCH_UP_PAGES; i++) {
        const page = await api.get(
          `/runs${api.query({ flow: filters.flow, tag: filters.tag, schedule_id: filters.schedule, include: "times", limit: PAGE, updated_after: since, cursor })}`
        );
        if (stopped) return;
        changed = merge(page.items) || changed;
        cursor = page.next_cursor;
        if (!cursor) break;
      }
      setLive("live");
      showError(null);
      if (changed) render();
      else refreshAges();
    } catch (err) {
      if (stopped) return;
      setLive("error");
      showError(err);
    }
    schedulePoll(POLL_MS);
  }

  function refreshAges() {
    // Durations of running runs and "x s ago" move on without a change.
    for (const run of runs.values()) {
      const tr = rows.get(run.run_id);
      if (!tr || !tr.isConnected) continue;
      const cells = tr.children;
      cells[6].textContent = ago(run.updated_at);
      if (!TERMINAL.has(run.status) && run.start_time) {
        cells[5].textContent = duration(Date.now() / 1000 - run.start_time);
      }
    }
  }

  function schedulePoll(ms, fn = poll) {
    clearTimeout(pollTimer);
    if (!stopped) pollTimer = setTimeout(fn, ms);
  }

  function counts(samples) {
    const last = samples[samples.length - 1];
    if (!last) return;
    replace(
      countsBox,
      RUN_STATUSES.map((st) =>
        h(
          "a",
          {
            class: ["chip", filters.status === st && "active"],
            href: `#/runs?status=${st}`,
            dataset: { state: stateClass(st), status: st },
          },
          h("span", { class: "chip-label" }, t(`status.${st}`)),
          h("span", { class: "chip-count" }, number(last.runs[st] || 0))
        )
      )
    );
  }

  load();
  const unsubscribe = subscribe(counts);

  return () => {
    stopped = true;
    clearTimeout(pollTimer);
    unsubscribe();
  };
}
