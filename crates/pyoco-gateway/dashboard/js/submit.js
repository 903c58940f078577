// Submit a flow from the page: pick, drop or paste a flow.yaml; the gateway checks it as it is
// typed (POST /flows/check: the same parser and rules as a submit) and answers its defaults,
// which prefill the params; choose the flow name and tag; the new run opens. Or, under "When",
// make it a schedule instead (POST /schedules/yaml): once at a time, every N seconds, or a cron
// expression in a time zone; the schedules view opens.

import * as api from "./api.js";
import { fileDrop, h, replace } from "./dom.js";
import { pretty } from "./format.js";
import { t } from "./i18n.js";

const CHECK_DELAY_MS = 350;
const WHENS = ["now", "once", "interval", "cron"];

/** The browser's IANA time zone (the cron field's default), else UTC. */
function localZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

/** A `datetime-local` value (the browser's local time) as ISO 8601 with offset (UTC, `Z`). */
function isoFromLocal(value) {
  if (!value) return "";
  const d = new Date(value);
  return isNaN(d.getTime()) ? "" : d.toISOString();
}

/** `datetime-local` text for a Date, in local time, to the second. */
function localText(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function submitView(root, params, { navigate }) {
  let checked = null; // the last good answer of /flows/check
  let defaultsText = "{}";
  let timer = null;
  let seq = 0;

  const yamlBox = h("textarea", { id: "submit-yaml", class: "code-input", rows: 14, spellcheck: "false", placeholder: "version: 1\nflow:\n  graph: |\n    hello\ntasks:\n  hello:\n    callable: my_tasks:hello" });
  const fileInput = h("input", { type: "file", id: "submit-file", accept: ".yaml,.yml,text/yaml,application/x-yaml", hidden: true });
  const drop = h("div", { class: "dropzone small", id: "submit-drop", tabindex: 0, role: "button" }, h("strong", {}, t("submit.drop")), h("span", { class: "muted" }, t("submit.drop_hint")));
  const checkBox = h("p", { class: "check-result", id: "submit-check", dataset: { kind: "idle" } }, t("submit.paste_first"));
  const nameInput = h("input", { id: "submit-flow-name", value: params.get("flow") || "main", autocomplete: "off", spellcheck: "false" });
  const tagInput = h("input", { id: "submit-tag", value: params.get("tag") || "", placeholder: t("submit.tag_default"), autocomplete: "off", spellcheck: "false" });
  const paramsBox = h("textarea", { id: "submit-params", class: "code-input", rows: 8, spellcheck: "false" }, "{}");
  const paramsNote = h("p", { class: "muted small", id: "submit-params-note" }, t("submit.params_note"));
  const submitBtn = h("button", { type: "submit", class: "btn btn-primary", id: "submit-run", disabled: true }, t("submit.run"));
  const errorBox = h("p", { class: "error", id: "submit-error", hidden: true });

  // When: now (a run) or a schedule.
  const initialWhen = WHENS.includes(params.get("when")) ? params.get("when") : "now";
  const whenRadios = WHENS.map((w) =>
    h("label", { class: "radio" }, h("input", { type: "radio", name: "when", value: w, id: `when-opt-${w}`, checked: w === initialWhen }), h("span", {}, t(`when.${w}`)))
  );
  const runAtInput = h("input", { type: "datetime-local", id: "when-run-at", step: 1, value: localText(new Date(Date.now() + 60_000)) });
  const intervalInput = h("input", { type: "number", id: "when-interval", min: 1, step: "any", value: 60, inputmode: "decimal" });
  const startAtInput = h("input", { type: "datetime-local", id: "when-start-at", step: 1 });
  const cronInput = h("input", { id: "when-cron", value: "*/5 * * * *", autocomplete: "off", spellcheck: "false", class: "mono" });
  const zones = (() => {
    try {
      return Intl.supportedValuesOf("timeZone");
    } catch {
      return [];
    }
  })();
  const zoneInput = h("input", { id: "when-timezone", value: localZone(), list: "when-zones", autocomplete: "off", spellcheck: "false" });
  const zoneList = h("datalist", { id: "when-zones" }, ["UTC", ...zones].map((z) => h("option", { value: z })));
  const catchUpSelect = h("select", { id: "when-catch-up" }, ["none", "one"].map((c) => h("option", { value: c }, t(`when.catch_up_${c}`))));
  const whenPanels = {
    now: null,
    once: h("div", { class: "filters", dataset: { when: "once" } }, h("label", { class: "field" }, h("span", {}, t("when.run_at")), runAtInput)),
    interval: h(
      "div",
      { class: "filters", dataset: { when: "interval" } },
      h("label", { class: "field" }, h("span", {}, t("when.interval_seconds")), intervalInput),
      h("label", { class: "field" }, h("span", {}, t("when.start_at")), startAtInput),
      h("label", { class: "field" }, h("span", {}, t("when.catch_up")), catchUpSelect)
    ),
    cron: h(
      "div",
      { class: "filters", dataset: { when: "cron" } },
      h("label", { class: "field" }, h("span", {}, t("when.cron")), cronInput),
      h("label", { class: "field" }, h("span", {}, t("when.timezone")), zoneInput, zoneList)
    ),
  };
  const whenNote = h("p", { class: "muted small", id: "when-note" });
  const chosenWhen = () => (whenRadios.map((l) => l.querySelector("input")).find((i) => i.checked) || {}).value || "now";
  function showWhen() {
    const when = chosenWhen();
    for (const [w, panel] of Object.entries(whenPanels)) if (panel) panel.hidden = w !== when;
    // catch_up sits with the interval fields; cron schedules have it too.
    if (when === "cron") whenPanels.cron.appendChild(catchUpSelect.closest("label"));
    else if (when === "interval") whenPanels.interval.appendChild(catchUpSelect.closest("label"));
    whenNote.textContent = when === "now" ? "" : t(`when.note_${when}`);
    submitBtn.textContent = when === "now" ? t("submit.run") : t("submit.schedule");
    validate();
  }
  for (const label of whenRadios) label.querySelector("input").addEventListener("change", showWhen);

  fileDrop(drop, fileInput, (file) => readFile(file));
  yamlBox.addEventListener("input", scheduleCheck);
  paramsBox.addEventListener("input", validate);
  nameInput.addEventListener("input", validate);

  async function readFile(file) {
    yamlBox.value = await file.text();
    check();
  }

  function scheduleCheck() {
    clearTimeout(timer);
    timer = setTimeout(check, CHECK_DELAY_MS);
  }

  function workflowForm() {
    const form = new FormData();
    form.append("workflow", new Blob([yamlBox.value], { type: "application/x-yaml" }), "flow.yaml");
    return form;
  }

  async function check() {
    clearTimeout(timer);
    const mine = ++seq;
    if (!yamlBox.value.trim()) {
      checked = null;
      checkBox.dataset.kind = "idle";
      checkBox.textContent = t("submit.paste_first");
      validate();
      return;
    }
    checkBox.dataset.kind = "busy";
    checkBox.textContent = t("submit.checking");
    try {
      const answer = await api.post("/flows/check", { body: workflowForm() });
      if (mine !== seq) return;
      const oldDefaults = defaultsText;
      checked = answer;
      defaultsText = pretty(answer.defaults || {});
      // Prefill the params unless the user changed them.
      if (paramsBox.value.trim() === oldDefaults.trim() || paramsBox.value.trim() === "{}" || paramsBox.value.trim() === "") {
        paramsBox.value = defaultsText;
      }
      const tasks = Object.keys(answer.tasks || {});
      checkBox.dataset.kind = "ok";
      checkBox.textContent = t("submit.valid", { n: tasks.length, tasks: tasks.slice(0, 8).join(", ") + (tasks.length > 8 ? ", …" : "") });
    } catch (err) {
      if (mine !== seq) return;
      checked = null;
      checkBox.dataset.kind = "error";
      checkBox.textContent = t("submit.invalid", { status: err.status || "—", detail: err.detail || err.message });
    }
    validate();
  }

  /** The params to send, `undefined` when they are the defaults, or an Error. */
  function chosenParams() {
    const text = paramsBox.value.trim();
    if (!text || text === defaultsText.trim()) return undefined;
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return new Error(t("submit.params_not_json", { detail: err.message }));
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) return new Error(t("submit.params_not_object"));
    return value;
  }

  function validate() {
    const p = chosenParams();
    paramsNote.textContent = p instanceof Error ? p.message : t("submit.params_note");
    paramsNote.classList.toggle("error-text", p instanceof Error);
    submitBtn.disabled = !checked || p instanceof Error || !nameInput.value.trim();
  }

  /** The schedule's fields for POST /schedules/yaml, or an Error. */
  function whenFields() {
    const when = chosenWhen();
    if (when === "once") {
      const at = isoFromLocal(runAtInput.value);
      return at ? { run_at: at } : new Error(t("when.need_time"));
    }
    if (when === "interval") {
      const fields = { interval_seconds: intervalInput.value.trim(), catch_up: catchUpSelect.value };
      if (startAtInput.value) fields.start_at = isoFromLocal(startAtInput.value);
      return fields;
    }
    return { cron: cronInput.value.trim(), timezone: zoneInput.value.trim() || "UTC", catch_up: catchUpSelect.value };
  }

  async function submit(e) {
    e.preventDefault();
    const p = chosenParams();
    if (!checked || p instanceof Error) return;
    submitBtn.disabled = true;
    errorBox.hidden = true;
    const form = workflowForm();
    form.append("flow_name", nameInput.value.trim());
    if (tagInput.value.trim()) form.append("tag", tagInput.value.trim());
    if (p !== undefined) form.append("params", JSON.stringify(p));
    const when = chosenWhen();
    try {
      if (when === "now") {
        const answer = await api.post("/runs/yaml", { body: form });
        navigate(`#/runs/${encodeURIComponent(answer.run_id)}`);
        return;
      }
      const fields = whenFields();
      if (fields instanceof Error) throw fields;
      for (const [k, v] of Object.entries(fields)) form.append(k, v);
      await api.post("/schedules/yaml", { body: form });
      navigate("#/schedules");
    } catch (err) {
      errorBox.hidden = false;
      errorBox.textContent = t("submit.refused", { status: err.status || "—", detail: err.detail || err.message });
      validate();
    }
  }

  replace(
    root,
    h(
      "section",
      { class: "view", id: "view-submit" },
      h("div", { class: "view-head" }, h("h1", {}, t("submit.title"))),
      h(
        "form",
        { class: "submit-form", id: "submit-form", onsubmit: submit },
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("submit.flow_yaml")),
          drop,
          fileInput,
          yamlBox,
          checkBox
        ),
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("submit.run_settings")),
          h(
            "div",
            { class: "filters" },
            h("label", { class: "field" }, h("span", {}, t("submit.flow_name")), nameInput),
            h("label", { class: "field" }, h("span", {}, t("submit.tag")), tagInput)
          ),
          h("label", { class: "field wide" }, h("span", {}, t("submit.params")), paramsBox),
          paramsNote,
          h("fieldset", { class: "when", id: "submit-when" }, h("legend", {}, t("when.title")), h("div", { class: "radios" }, whenRadios), Object.values(whenPanels), whenNote),
          errorBox,
          h("div", { class: "dialog-actions" }, submitBtn)
        )
      )
    )
  );
  showWhen();
  return () => clearTimeout(timer);
}
