// Schedules (GET /schedules): each one's flow, tag, when it fires (once, every N seconds, or a
// cron expression in a time zone), its state, the next run time (counting down), the last run
// and how many it dispatched; Pause/Resume (PATCH), Runs (the runs list filtered by the
// schedule) and Delete. New schedules are made in the Submit view ("When").

import * as api from "./api.js";
import { confirmDialog } from "./dialog.js";
import { h, replace } from "./dom.js";
import { ago, dateTime, duration, number, stateClass } from "./format.js";
import { t } from "./i18n.js";

const POLL_MS = 2000;

/** Seconds from now until `epoch`, as "in 12 s" (or "due" when passed). */
function until(epoch, now = Date.now() / 1000) {
  if (typeof epoch !== "number" || !isFinite(epoch)) return "";
  const s = epoch - now;
  return s <= 0 ? t("schedules.due") : t("schedules.in", { d: duration(s) });
}

/** What makes the schedule fire, in words. */
export function describeWhen(s) {
  if (s.schedule_type === "cron" || s.cron) {
    return t("schedules.when_cron", { expr: s.cron || "?", tz: s.timezone || "UTC" });
  }
  if (s.schedule_type === "interval") {
    const every = t("schedules.when_every", { d: duration(Number(s.interval_seconds)) });
    return s.start_at ? `${every} ${t("schedules.when_from", { at: dateTime(s.start_at) })}` : every;
  }
  return t("schedules.when_once", { at: dateTime(s.run_at) });
}

function isPaused(s) {
  return s.paused === true || s.status === "PAUSED";
}

export function schedulesView(root, params, { navigate }) {
  let stopped = false;
  let timer = null;
  let tick = null;
  let items = [];
  let shownKey = "";
  const dialog = confirmDialog(t("schedules.delete"), t("schedules.keep"));
  const body = h("tbody", { id: "schedules-body" });
  const empty = h("p", { class: "empty", id: "schedules-empty", hidden: true }, t("schedules.empty"), " ", h("a", { href: "#/submit" }, t("schedules.create_hint")));
  const errorBox = h("p", { class: "error", id: "schedules-error", hidden: true });

  function fail(err) {
    errorBox.hidden = false;
    errorBox.textContent = t("error.action", { detail: err.detail || err.message });
  }

  async function setPaused(item, paused) {
    try {
      await api.patch(`/schedules/${encodeURIComponent(item.schedule_id)}`, { json: { paused } });
      load();
    } catch (err) {
      fail(err);
    }
  }

  async function remove(item) {
    if (!(await dialog.ask(t("schedules.delete_confirm", { flow: item.flow_name || "", id: item.schedule_id })))) return;
    try {
      await api.del(`/schedules/${encodeURIComponent(item.schedule_id)}`);
      load();
    } catch (err) {
      fail(err);
    }
  }

  const runLink = (id) => (id ? h("a", { class: "mono", href: `#/runs/${encodeURIComponent(id)}` }, String(id).slice(0, 8)) : "—");

  function row(item) {
    const paused = isPaused(item);
    const status = paused ? "PAUSED" : item.status || "ACTIVE";
    const active = status === "ACTIVE";
    return h(
      "tr",
      { dataset: { scheduleId: item.schedule_id, status } },
      h("td", {}, h("strong", {}, item.flow_name || "—"), h("div", { class: "small muted mono" }, String(item.schedule_id || "").slice(0, 8))),
      h("td", {}, item.tag || "—"),
      h("td", { class: "when" }, describeWhen(item), item.catch_up === "one" ? h("div", { class: "small muted" }, t("schedules.catch_up_one")) : null),
      h("td", {}, h("span", { class: "badge", dataset: { state: `schedule-${stateClass(status)}` } }, t(`schedules.status_${status}`))),
      h(
        "td",
        { class: "num" },
        active && item.next_run_at ? [h("div", { dataset: { field: "next" } }, dateTime(item.next_run_at)), h("div", { class: "small muted", dataset: { field: "until", at: String(item.next_run_at) } }, until(item.next_run_at))] : "—"
      ),
      h("td", {}, runLink(item.last_run_id), item.last_submitted_at ? h("div", { class: "small muted" }, ago(item.last_submitted_at)) : null),
      h("td", { class: "num", dataset: { field: "count" } }, number(item.dispatch_count || 0)),
      h("td", { class: "error-text small" }, item.last_error || ""),
      h(
        "td",
        { class: "actions" },
        status === "COMPLETED"
          ? null
          : h(
              "button",
              { type: "button", class: "btn btn-small", dataset: { action: paused ? "resume" : "pause" }, onclick: () => setPaused(item, !paused) },
              t(paused ? "schedules.resume" : "schedules.pause")
            ),
        h("a", { class: "btn btn-small", dataset: { action: "runs" }, href: `#/runs?schedule=${encodeURIComponent(item.schedule_id)}` }, t("schedules.runs")),
        h("button", { type: "button", class: "btn btn-small btn-danger", dataset: { action: "delete" }, onclick: () => remove(item) }, t("schedules.delete"))
      )
    );
  }

  async function load() {
    clearTimeout(timer);
    if (document.hidden && items.length) {
      timer = setTimeout(load, POLL_MS);
      return;
    }
    try {
      const page = await api.get("/schedules");
      if (stopped) return;
      errorBox.hidden = true;
      items = Array.isArray(page) ? page : page.items || page.schedules || [];
      // Rows are rebuilt only when a schedule changed (a button under the pointer stays put).
      const key = JSON.stringify(items);
      if (key !== shownKey) {
        shownKey = key;
        replace(body, items.map(row));
      }
      empty.hidden = items.length > 0;
    } catch (err) {
      if (!stopped) fail(err);
    }
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-schedules" },
      h("div", { class: "view-head" }, h("h1", {}, t("schedules.title")), h("span", { class: "spacer" }), h("a", { class: "btn btn-primary", href: "#/submit?when=cron", id: "schedules-new" }, t("schedules.new"))),
      h("p", { class: "muted" }, t("schedules.intro")),
      errorBox,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "schedules" },
          h("thead", {}, h("tr", {}, ["flow", "tag", "when", "status", "next", "last", "count", "error", "actions"].map((k) => h("th", {}, t(`schedules.col_${k}`))))),
          body
        )
      ),
      empty,
      dialog.el
    )
  );
  load();
  // The countdowns move on between loads.
  tick = setInterval(() => {
    for (const el of body.querySelectorAll('[data-field="until"]')) el.textContent = until(Number(el.dataset.at));
  }, 1000);
  void params;
  void navigate;
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(tick);
  };
}
