// A modal yes/no question: a <dialog> with text only.

import { h } from "./dom.js";

/** `{el, ask(question) → Promise<boolean>}`; put `el` into the view. */
export function confirmDialog(yesLabel, noLabel) {
  const text = h("p", { id: "confirm-text" });
  const yes = h("button", { type: "button", class: "btn btn-danger", id: "confirm-yes" }, yesLabel);
  const no = h("button", { type: "button", class: "btn", id: "confirm-no" }, noLabel);
  const el = h("dialog", { class: "dialog", id: "confirm-dialog" }, text, h("div", { class: "dialog-actions" }, no, yes));
  return {
    el,
    ask(question) {
      text.textContent = question;
      el.showModal();
      return new Promise((resolve) => {
        const done = (answer) => {
          yes.onclick = no.onclick = el.oncancel = null;
          el.close();
          resolve(answer);
        };
        yes.onclick = () => done(true);
        no.onclick = () => done(false);
        el.oncancel = () => done(false);
      });
    },
  };
}
