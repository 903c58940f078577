// The dashboard's shell: header, language switch, API key dialog, and the hash router
// (#/runs, #/runs/<id>, #/submit, #/schedules, #/workers, #/metrics, #/wheels, #/dlq). Each view is a function
// (root, params, ctx) → cleanup.

import { auth } from "./api.js";
import { byId, h, replace, s } from "./dom.js";
import { currentLang, initLang, LANGS, setLang, t } from "./i18n.js";
import { dlqView } from "./dlq.js";
import { metricsView } from "./metrics.js";
import { runView } from "./run.js";
import { runsView } from "./runs.js";
import { schedulesView } from "./schedules.js";
import { submitView } from "./submit.js";
import { wheelsView } from "./wheels.js";
import { workersView } from "./workers.js";

let cleanup = null;

/** The views of the navigation besides the runs list, by their hash. */
const VIEWS = { submit: submitView, schedules: schedulesView, workers: workersView, metrics: metricsView, wheels: wheelsView, dlq: dlqView };

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const [path, q] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(q || "") };
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const { parts, params } = parseHash();
  const root = byId("view");
  const ctx = { navigate };
  let active = "runs";
  if (parts[0] === "runs" && parts[1]) {
    cleanup = runView(root, parts[1], ctx);
  } else if (VIEWS[parts[0]]) {
    active = parts[0];
    document.title = `${t(`nav.${active}`)} · pyoco-server`;
    cleanup = VIEWS[active](root, params, ctx);
  } else {
    document.title = `${t("nav.runs")} · pyoco-server`;
    cleanup = runsView(root, params, ctx);
  }
  for (const a of document.querySelectorAll(".nav a")) a.classList.toggle("active", a.dataset.view === active);
}

function logo() {
  return s(
    "svg",
    { class: "brand-logo", viewBox: "0 0 512 512", "aria-hidden": "true" },
    s("rect", { x: 16, y: 16, width: 480, height: 480, rx: 112, class: "logo-bg" }),
    s(
      "g",
      { class: "logo-lines" },
      s("path", { d: "M128 256 C 190 256, 200 166, 256 166 C 312 166, 322 256, 384 256" }),
      s("path", { d: "M128 256 C 190 256, 200 346, 256 346 C 312 346, 322 256, 384 256" })
    ),
    s(
      "g",
      { class: "logo-dots" },
      s("circle", { cx: 128, cy: 256, r: 54 }),
      s("circle", { cx: 256, cy: 166, r: 42 }),
      s("circle", { cx: 256, cy: 346, r: 42 }),
      s("circle", { cx: 384, cy: 256, r: 54 })
    )
  );
}

function header() {
  const langSelect = h(
    "select",
    { id: "lang", "aria-label": t("lang.label") },
    LANGS.map((l) => h("option", { value: l, selected: l === currentLang() }, l === "ja" ? "日本語" : "English"))
  );
  langSelect.addEventListener("change", () => {
    setLang(langSelect.value);
    // Drop a ?lang= from the address: the switch is the choice now.
    const url = new URL(location.href);
    url.searchParams.delete("lang");
    history.replaceState(null, "", url);
    renderShell();
    route();
  });
  const keyButton = h("button", { type: "button", class: "btn btn-small", id: "auth-open", onclick: () => authDialog.open() }, t("auth.button"));
  return h(
    "header",
    { class: "app-header" },
    h("a", { class: "brand", href: "#/runs" }, logo(), h("span", { class: "brand-name" }, "pyoco-server")),
    h(
      "nav",
      { class: "nav", "aria-label": t("nav.label") },
      ["runs", "submit", "schedules", "workers", "metrics", "wheels", "dlq"].map((v) =>
        h("a", { href: `#/${v}`, dataset: { view: v }, id: `nav-${v}` }, t(`nav.${v}`))
      )
    ),
    h("span", { class: "spacer" }),
    langSelect,
    keyButton
  );
}

const authDialog = {
  el: null,
  open(message) {
    if (!this.el) return;
    const form = this.el.querySelector("form");
    form.elements.header.value = auth.header();
    form.elements.key.value = auth.key();
    const note = this.el.querySelector("#auth-note");
    note.textContent = message || "";
    note.hidden = !message;
    if (!this.el.open) this.el.showModal();
    form.elements.key.focus();
  },
  build() {
    const form = h(
      "form",
      { method: "dialog", id: "auth-form" },
      h("h2", {}, t("auth.title")),
      h("p", {}, t("auth.text")),
      h("p", { class: "error", id: "auth-note", hidden: true }),
      h("label", { class: "field" }, h("span", {}, t("auth.header")), h("input", { name: "header", id: "auth-header", autocomplete: "off", spellcheck: "false" })),
      h("label", { class: "field" }, h("span", {}, t("auth.key")), h("input", { name: "key", id: "auth-key", type: "password", autocomplete: "off" })),
      h(
        "div",
        { class: "dialog-actions" },
        h("button", { type: "button", class: "btn", id: "auth-clear", onclick: () => this.finish(false) }, t("auth.clear")),
        h("button", { type: "button", class: "btn", id: "auth-close", onclick: () => this.el.close() }, t("auth.cancel")),
        h("button", { type: "submit", class: "btn btn-primary", id: "auth-save" }, t("auth.save"))
      )
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.finish(true);
    });
    this.el = h("dialog", { class: "dialog", id: "auth-dialog" }, form);
    return this.el;
  },
  finish(save) {
    const form = this.el.querySelector("form");
    if (save) auth.save(form.elements.header.value.trim(), form.elements.key.value.trim());
    else auth.save("", "");
    this.el.close();
    route();
  },
};

function renderShell() {
  replace(byId("app"), header(), h("main", { id: "view", class: "app-main" }), authDialog.build());
}

auth.onRequired(() => {
  const hadKey = !!auth.key();
  if (authDialog.el && !authDialog.el.open) authDialog.open(hadKey ? t("auth.rejected", { detail: "401" }) : "");
});

// `?embed=1`: inside the desktop app's window, whose tabs replace the header's navigation.
if (new URLSearchParams(location.search).get("embed") === "1") document.documentElement.classList.add("embedded");
initLang();
renderShell();
window.addEventListener("hashchange", route);
route();
