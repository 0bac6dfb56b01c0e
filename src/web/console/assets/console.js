// dispatch-gate console: enhancements only (every page works without this).
// 1. Live updates: pages marked data-live follow /live (the same stream as
//    GET /v1/stream) and swap in a fresh copy of #live when a run or decision
//    they may show changes; EventSource resumes with Last-Event-ID by itself.
// 2. Confirmation dialogs for forms marked data-confirm.
// 3. Sign-in links (/sign-in#token=…, printed by serve --demo): the token is
//    in the fragment, which browsers never send to the server; it fills the
//    token field, leaves the address bar, and the operator presses Sign in.
//    Also when the link is opened on a /sign-in page already shown (another
//    user's link pasted into the address bar changes only the fragment).
"use strict";

(function live() {
  const body = document.body;
  if (!body.dataset.live || !window.EventSource) return;
  const after = body.dataset.after;
  const source = new EventSource(after ? "/live?after=" + encodeURIComponent(after) : "/live");
  let timer = null;
  let busy = false;
  async function refresh() {
    timer = null;
    const region = document.getElementById("live");
    if (!region) return;
    // Never swap what the operator is typing or choosing in.
    if (region.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) {
      schedule();
      return;
    }
    if (busy) { schedule(); return; }
    busy = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("live");
      if (!fresh) return;
      const open = new Set([...region.querySelectorAll("details[open] summary")].map((s) => s.textContent));
      region.replaceChildren(...fresh.childNodes);
      region.querySelectorAll("details summary").forEach((s) => { if (open.has(s.textContent)) s.parentElement.open = true; });
      body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
      bindConfirms(region);
    } finally {
      busy = false;
    }
  }
  function schedule() {
    if (timer === null) timer = setTimeout(refresh, 250);
  }
  source.addEventListener("open", () => { body.dataset.liveState = "connected"; });
  source.addEventListener("error", () => { body.dataset.liveState = "reconnecting"; });
  source.addEventListener("run", schedule);
  source.addEventListener("decision", schedule);
})();

function bindConfirms(root) {
  root.querySelectorAll("form[data-confirm]").forEach((form) => {
    if (form.dataset.confirmBound) return;
    form.dataset.confirmBound = "1";
    form.addEventListener("submit", (event) => {
      if (form.dataset.confirmed === "1" || typeof HTMLDialogElement !== "function") return;
      event.preventDefault();
      const dialog = document.createElement("dialog");
      dialog.setAttribute("aria-labelledby", "confirm-text");
      const text = document.createElement("p");
      text.id = "confirm-text";
      text.textContent = form.dataset.confirm;
      const buttons = document.createElement("div");
      buttons.className = "buttons";
      const no = document.createElement("button");
      no.type = "button";
      no.textContent = "Go back";
      const yes = document.createElement("button");
      yes.type = "button";
      yes.className = "danger";
      yes.textContent = "Yes, go ahead";
      buttons.append(no, yes);
      dialog.append(text, buttons);
      document.body.append(dialog);
      no.addEventListener("click", () => { dialog.close(); dialog.remove(); });
      yes.addEventListener("click", () => {
        form.dataset.confirmed = "1";
        dialog.close();
        dialog.remove();
        form.requestSubmit();
      });
      dialog.showModal();
    });
  });
}
bindConfirms(document);

(function signInLinks() {
  const field = document.getElementById("token");
  if (!field) return;
  function take() {
    const match = /^#token=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
    if (!match) return;
    field.value = match[1];
    history.replaceState(null, "", window.location.pathname + window.location.search);
    const note = document.getElementById("link-note");
    if (note) note.hidden = false;
    const submit = field.form && field.form.querySelector("button[type=submit]");
    if (submit) submit.focus();
  }
  take();
  // A link opened while this page already shows /sign-in changes only the
  // fragment: the browser does not load the page again, it fires hashchange.
  window.addEventListener("hashchange", take);
})();
