// Workers: state (derived by the gateway), tags, current run, last heartbeat, last result,
// wheel sync; hide and unhide. Polled every 3 s.

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import { ago, stateClass } from "./format.js";
import { t } from "./i18n.js";

const POLL_MS = 3000;
const STATES = ["RUNNING", "IDLE", "STOPPED_GRACEFUL", "DISCONNECTED"];

export function workersView(root, params, { navigate }) {
  let stopped = false;
  let timer = null;
  const showHidden = params.get("hidden") === "1";
  const stateFilter = STATES.includes(params.get("state")) ? params.get("state") : "";

  const body = h("tbody", { id: "workers-body" });
  const empty = h("p", { class: "empty", id: "workers-empty", hidden: true }, t("workers.empty"));
  const errorBox = h("p", { class: "error", id: "workers-error", hidden: true });
  const hiddenBox = h("input", { type: "checkbox", id: "workers-show-hidden", checked: showHidden });
  const stateSelect = h(
    "select",
    { id: "workers-state" },
    h("option", { value: "" }, t("workers.all_states")),
    STATES.map((st) => h("option", { value: st, selected: st === stateFilter }, t(`worker.${st}`)))
  );
  const reroute = () => {
    const q = new URLSearchParams();
    if (hiddenBox.checked) q.set("hidden", "1");
    if (stateSelect.value) q.set("state", stateSelect.value);
    navigate(`#/workers${q.toString() ? `?${q}` : ""}`);
  };
  hiddenBox.addEventListener("change", reroute);
  stateSelect.addEventListener("change", reroute);

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-workers" },
      h("div", { class: "view-head" }, h("h1", {}, t("workers.title"))),
      h(
        "form",
        { class: "filters", onsubmit: (e) => e.preventDefault() },
        h("label", { class: "field" }, h("span", {}, t("workers.state")), stateSelect),
        h("label", { class: "check" }, hiddenBox, h("span", {}, t("workers.show_hidden")))
      ),
      errorBox,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "workers" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["col_worker", "col_state", "col_tags", "col_current", "col_heartbeat", "col_last", "col_wheels", "col_actions"].map((k) =>
                h("th", {}, t(`workers.${k}`))
              )
            )
          ),
          body
        )
      ),
      empty
    )
  );

  async function toggleHidden(worker) {
    try {
      await api.patch(`/workers/${encodeURIComponent(worker.worker_id)}`, { json: { hidden: !worker.hidden } });
      await load();
    } catch (err) {
      errorBox.hidden = false;
      errorBox.textContent = t("error.action", { detail: err.detail || err.message });
    }
  }

  function wheelCell(ws) {
    if (!ws || !ws.enabled) return h("span", { class: "muted" }, t("workers.sync_off"));
    const failed = Array.isArray(ws.failed_wheels) ? ws.failed_wheels : [];
    return h(
      "span",
      { title: ws.last_error || "" },
      h("span", { class: "badge", dataset: { state: ws.last_result === "error" ? "failed" : ws.last_result === "ok" ? "completed" : "pending" } }, ws.last_result || "—"),
      " ",
      t("workers.installed", { n: (ws.installed_wheels || []).length }),
      failed.length ? [" · ", h("span", { class: "error-text" }, t("workers.failed_wheels", { n: failed.length }))] : null
    );
  }

  function render(workers) {
    replace(
      body,
      workers.map((w) => {
        const state = w.state || "IDLE";
        return h(
          "tr",
          { dataset: { workerId: w.worker_id, state }, class: w.hidden ? "hidden-row" : null },
          h("td", { class: "mono" }, w.worker_id, w.hidden ? h("span", { class: "chip small" }, t("workers.hidden")) : null),
          h(
            "td",
            {},
            h("span", { class: "badge", dataset: { state: stateClass(state) } }, t(`worker.${state}`)),
            state === "DISCONNECTED" ? h("div", { class: "muted small" }, t("workers.connection_lost")) : null
          ),
          h("td", {}, (w.tags || []).map((tag) => h("span", { class: "chip small" }, tag))),
          h("td", { class: "mono" }, w.current_run_id ? h("a", { href: `#/runs/${encodeURIComponent(w.current_run_id)}` }, String(w.current_run_id).slice(0, 8)) : "—"),
          h("td", { class: "num", title: String(w.last_heartbeat_at || "") }, ago(w.last_heartbeat_at)),
          h(
            "td",
            {},
            w.last_run_status ? h("span", { class: "badge", dataset: { state: stateClass(w.last_run_status) } }, t(`status.${w.last_run_status}`)) : "—",
            w.last_run_id ? [" ", h("a", { class: "mono", href: `#/runs/${encodeURIComponent(w.last_run_id)}` }, String(w.last_run_id).slice(0, 8))] : null
          ),
          h("td", {}, wheelCell(w.wheel_sync)),
          h("td", {}, h("button", { type: "button", class: "btn btn-small", dataset: { action: "toggle-hidden" }, onclick: () => toggleHidden(w) }, w.hidden ? t("workers.unhide") : t("workers.hide")))
        );
      })
    );
    empty.hidden = workers.length > 0;
  }

  async function load() {
    clearTimeout(timer);
    try {
      const answer = await api.get(
        `/workers${api.query({ scope: "all", limit: 200, state: stateFilter, include_hidden: showHidden ? "true" : undefined })}`
      );
      if (stopped) return;
      const workers = Array.isArray(answer) ? answer : answer.items || [];
      errorBox.hidden = true;
      render(workers);
    } catch (err) {
      if (stopped) return;
      errorBox.hidden = false;
      errorBox.textContent = t("error.load", { detail: err.detail || err.message });
    }
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
