// Dead letters (GET /dlq): newest first, filtered by reason, tag and run; each one's error,
// its run, and what replayed it; Replay (a new run, which opens) and Delete.

import * as api from "./api.js";
import { confirmDialog } from "./dialog.js";
import { h, replace } from "./dom.js";
import { dateTime } from "./format.js";
import { t } from "./i18n.js";

const REASONS = ["execution_error", "flow_not_found", "invalid_job", "max_deliver_exceeded", "snapshot_too_large"];

export function dlqView(root, params, { navigate }) {
  let stopped = false;
  let cursor = null;
  const filters = { reason: params.get("reason") || "", tag: params.get("tag") || "", run: params.get("run") || "" };
  const dialog = confirmDialog(t("dlq.delete"), t("dlq.keep"));
  const body = h("tbody", { id: "dlq-body" });
  const empty = h("p", { class: "empty", id: "dlq-empty", hidden: true }, t("dlq.empty"));
  const errorBox = h("p", { class: "error", id: "dlq-error", hidden: true });
  const more = h("button", { type: "button", class: "btn", id: "dlq-more", hidden: true, onclick: () => load(true) }, t("dlq.more"));
  const reasonSelect = h(
    "select",
    { id: "dlq-reason" },
    h("option", { value: "" }, t("dlq.all_reasons")),
    REASONS.map((r) => h("option", { value: r, selected: r === filters.reason }, r))
  );
  const tagInput = h("input", { id: "dlq-tag", type: "search", value: filters.tag, placeholder: t("runs.tag_exact"), autocomplete: "off" });
  const runInput = h("input", { id: "dlq-run", type: "search", value: filters.run, placeholder: t("dlq.run_exact"), autocomplete: "off" });
  const reroute = () => {
    const q = new URLSearchParams();
    if (reasonSelect.value) q.set("reason", reasonSelect.value);
    if (tagInput.value.trim()) q.set("tag", tagInput.value.trim());
    if (runInput.value.trim()) q.set("run", runInput.value.trim());
    navigate(`#/dlq${q.toString() ? `?${q}` : ""}`);
  };
  reasonSelect.addEventListener("change", reroute);
  tagInput.addEventListener("change", reroute);
  runInput.addEventListener("change", reroute);

  function fail(err) {
    errorBox.hidden = false;
    errorBox.textContent = t("error.action", { detail: err.detail || err.message });
  }

  async function replay(item) {
    try {
      const answer = await api.post(`/dlq/${encodeURIComponent(item.id)}/replay`);
      navigate(`#/runs/${encodeURIComponent(answer.run_id)}`);
    } catch (err) {
      fail(err);
    }
  }

  async function remove(item) {
    if (!(await dialog.ask(t("dlq.delete_confirm", { id: item.id })))) return;
    try {
      await api.del(`/dlq/${encodeURIComponent(item.id)}`);
      load(false);
    } catch (err) {
      fail(err);
    }
  }

  const runLink = (id) => (id ? h("a", { class: "mono", href: `#/runs/${encodeURIComponent(id)}` }, String(id).slice(0, 8)) : "—");

  function rows(items) {
    return items.map((item) =>
      h(
        "tr",
        { dataset: { dlqId: item.id, reason: item.reason } },
        h("td", { class: "mono" }, item.id),
        h("td", {}, h("span", { class: "badge", dataset: { state: "failed" } }, item.reason)),
        h("td", {}, runLink(item.run_id), item.flow_name ? h("div", { class: "small muted" }, item.flow_name) : null),
        h("td", {}, item.tag || "—"),
        h("td", { class: "error-text small" }, item.error || "—"),
        h("td", { class: "num" }, dateTime(item.timestamp)),
        h("td", {}, runLink(item.replayed_run_id)),
        h(
          "td",
          { class: "actions" },
          item.reason === "invalid_job" ? null : h("button", { type: "button", class: "btn btn-small", dataset: { action: "replay" }, onclick: () => replay(item) }, t("dlq.replay")),
          h("button", { type: "button", class: "btn btn-small btn-danger", dataset: { action: "delete" }, onclick: () => remove(item) }, t("dlq.delete"))
        )
      )
    );
  }

  async function load(next) {
    try {
      const page = await api.get(
        `/dlq${api.query({ reason: filters.reason, tag: filters.tag, run_id: filters.run, limit: 100, cursor: next ? cursor : undefined })}`
      );
      if (stopped) return;
      errorBox.hidden = true;
      if (next) body.append(...rows(page.items || []));
      else replace(body, rows(page.items || []));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      empty.hidden = body.children.length > 0;
    } catch (err) {
      if (!stopped) fail(err);
    }
  }

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-dlq" },
      h("div", { class: "view-head" }, h("h1", {}, t("dlq.title"))),
      h("p", { class: "muted" }, t("dlq.intro")),
      h(
        "form",
        { class: "filters", onsubmit: (e) => e.preventDefault() },
        h("label", { class: "field" }, h("span", {}, t("dlq.reason")), reasonSelect),
        h("label", { class: "field" }, h("span", {}, t("runs.tag")), tagInput),
        h("label", { class: "field" }, h("span", {}, t("runs.run_id")), runInput)
      ),
      errorBox,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "dlq" },
          h("thead", {}, h("tr", {}, ["id", "reason", "run", "tag", "error", "when", "replayed", "actions"].map((k) => h("th", {}, t(`dlq.col_${k}`))))),
          body
        )
      ),
      empty,
      h("div", { class: "table-foot" }, h("span", {}), more),
      dialog.el
    )
  );
  load(false);
  return () => {
    stopped = true;
  };
}
