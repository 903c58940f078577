// Wheels: the registry (GET /wheels), upload by drag and drop or file picker with progress
// (POST /wheels; a refusal shows the gateway's status and reason), delete with confirmation,
// and the history (uploads, deletes, and workers' failed installs).

import * as api from "./api.js";
import { confirmDialog } from "./dialog.js";
import { fileDrop, h, replace } from "./dom.js";
import { bytes, dateTime } from "./format.js";
import { t } from "./i18n.js";

export function wheelsView(root) {
  let stopped = false;
  const dialog = confirmDialog(t("wheels.delete"), t("wheels.keep"));
  const list = h("tbody", { id: "wheels-body" });
  const history = h("tbody", { id: "history-body" });
  const empty = h("p", { class: "empty", id: "wheels-empty", hidden: true }, t("wheels.empty"));
  const errorBox = h("p", { class: "error", id: "wheels-error", hidden: true });
  const status = h("p", { class: "upload-status", id: "upload-status", hidden: true });
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const fileInput = h("input", { type: "file", id: "wheel-file", accept: ".whl", hidden: true });
  const tagsInput = h("input", { id: "wheel-tags", placeholder: t("wheels.tags_placeholder"), autocomplete: "off", spellcheck: "false" });
  const replaceBox = h("input", { type: "checkbox", id: "wheel-replace", checked: true });
  const drop = h(
    "div",
    { class: "dropzone", id: "wheel-drop", tabindex: 0, role: "button" },
    h("strong", {}, t("wheels.drop")),
    h("span", { class: "muted" }, t("wheels.drop_hint"))
  );

  fileDrop(drop, fileInput, (file) => send(file));

  function say(kind, text) {
    status.hidden = false;
    status.dataset.kind = kind;
    status.textContent = text;
  }

  async function send(file) {
    if (!file.name.endsWith(".whl")) {
      say("error", t("wheels.not_a_wheel", { name: file.name }));
      return;
    }
    const form = new FormData();
    form.append("wheel", file, file.name);
    form.append("replace", replaceBox.checked ? "true" : "false");
    if (tagsInput.value.trim()) form.append("tags", tagsInput.value.trim());
    progress.hidden = false;
    progress.value = 0;
    say("busy", t("wheels.uploading", { name: file.name }));
    try {
      const stored = await api.upload("/wheels", form, (sent, total) => {
        progress.value = Math.round((sent / total) * 100);
      });
      progress.value = 100;
      say("ok", t("wheels.uploaded", { name: stored.name || file.name, size: bytes(stored.size_bytes) }));
      load();
    } catch (err) {
      say("error", t("wheels.refused", { status: err.status || "—", detail: err.detail || err.message }));
    } finally {
      setTimeout(() => {
        progress.hidden = true;
      }, 800);
    }
  }

  async function remove(name) {
    if (!(await dialog.ask(t("wheels.delete_confirm", { name })))) return;
    try {
      await api.del(`/wheels/${encodeURIComponent(name)}`);
      say("ok", t("wheels.deleted", { name }));
      load();
    } catch (err) {
      say("error", t("error.action", { detail: err.detail || err.message }));
    }
  }

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-wheels" },
      h("div", { class: "view-head" }, h("h1", {}, t("wheels.title"))),
      h(
        "section",
        { class: "card" },
        h("h2", {}, t("wheels.upload")),
        drop,
        fileInput,
        h(
          "div",
          { class: "filters" },
          h("label", { class: "field" }, h("span", {}, t("wheels.tags")), tagsInput),
          h("label", { class: "check" }, replaceBox, h("span", {}, t("wheels.replace")))
        ),
        progress,
        status
      ),
      errorBox,
      h(
        "section",
        { class: "card" },
        h("h2", {}, t("wheels.registry")),
        h(
          "div",
          { class: "table-wrap flat" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["name", "size", "tags", "modified", "actions"].map((k) => h("th", {}, t(`wheels.col_${k}`))))),
            list
          )
        ),
        empty
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, t("wheels.history")),
        h(
          "div",
          { class: "table-wrap flat" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["when", "action", "wheel", "who"].map((k) => h("th", {}, t(`wheels.col_${k}`))))),
            history
          )
        )
      ),
      dialog.el
    )
  );

  async function load() {
    try {
      const [wheels, events] = await Promise.all([api.get("/wheels"), api.get("/wheels/history?limit=50")]);
      if (stopped) return;
      errorBox.hidden = true;
      replace(
        list,
        (wheels || []).map((w) =>
          h(
            "tr",
            { dataset: { wheel: w.name } },
            h("td", { class: "mono" }, w.name),
            h("td", { class: "num" }, bytes(w.size_bytes)),
            h("td", {}, (w.tags || []).map((tag) => h("span", { class: "chip small" }, tag))),
            h("td", { class: "num" }, w.mtime ? String(w.mtime).replace("T", " ").slice(0, 19) : "—"),
            h("td", {}, h("button", { type: "button", class: "btn btn-small btn-danger", dataset: { action: "delete" }, onclick: () => remove(w.name) }, t("wheels.delete")))
          )
        )
      );
      empty.hidden = (wheels || []).length > 0;
      replace(
        history,
        (events || []).map((e) =>
          h(
            "tr",
            { dataset: { action: e.action } },
            h("td", { class: "num" }, dateTime(e.occurred_at)),
            h("td", {}, h("span", { class: "badge", dataset: { state: e.action === "install_failed" ? "failed" : e.action === "delete" ? "cancelled" : "completed" } }, t(`wheels.action_${e.action}`))),
            h("td", { class: "mono" }, e.wheel_name),
            h(
              "td",
              { class: "small" },
              e.worker_id ? [t("wheels.on_worker", { worker: e.worker_id }), e.error ? h("div", { class: "error-text" }, e.error) : null] : (e.actor && e.actor.tenant_id) || (e.source && e.source.remote_addr) || "—"
            )
          )
        )
      );
    } catch (err) {
      if (stopped) return;
      errorBox.hidden = false;
      errorBox.textContent = t("error.load", { detail: err.detail || err.message });
    }
  }

  load();
  return () => {
    stopped = true;
  };
}
