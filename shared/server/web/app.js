// The page's entry point: sign-in, the health panel, and the hash routes
//   #/            the submit form and the jobs list
//   #/jobs/<id>   one job (jobview.js)
// Other hashes (the skip link's) leave the view as it is.

import { api, ApiError, authHeaders, describe, token, whenUnauthorized } from "./api.js";
import { $, el, say } from "./dom.js";
import { JobsList } from "./jobs.js";
import { JobView } from "./jobview.js";
import { SubmitForm } from "./submit.js";

const HEALTH_MS = 10_000;

const jobs = new JobsList();
const jobView = new JobView();
new SubmitForm({ onSubmitted: () => jobs.refresh() });

// ## Sign-in

function showSignedIn(signedIn) {
  for (const node of document.querySelectorAll("[data-signed-in]")) node.hidden = !signedIn;
  $("#signin-section").hidden = signedIn;
  if (signedIn) route();
  else {
    jobView.close();
    $("#job-view").hidden = true;
    jobs.show(false);
    say($("#app-message"), "info", "");
  }
}

function signOut(message, kind = "info") {
  token.clear();
  $("#token").value = "";
  showSignedIn(false);
  say($("#signin-message"), kind, message);
  $("#token").focus();
  refreshHealth();
}

whenUnauthorized((err) => signOut(`${err.message}. Sign in again.`, "error"));

$("#signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const message = $("#signin-message");
  const value = $("#token").value.trim();
  if (!value) {
    say(message, "error", "Enter an API key or a Supabase access token.");
    return;
  }
  const button = $("#signin");
  button.disabled = true;
  say(message, "info", "Checking…");
  try {
    await api("/v1/jobs?limit=1", { bearer: value, quietAuth: true });
    token.set(value);
    $("#token").value = "";
    say(message, "info", "");
    showSignedIn(true);
    const appMessage = $("#app-message");
    say(appMessage, "ok", "Signed in.");
    setTimeout(() => appMessage.textContent === "Signed in." && say(appMessage, "info", ""), 4000);
    refreshHealth();
  } catch (err) {
    const text = err instanceof ApiError && err.unauthorized
      ? `This token was refused (${err.status}): ${err.message.replace(/^Not signed in: /, "")}`
      : `Could not check the token: ${err.message}`;
    say(message, "error", text, err.lines ?? []);
  } finally {
    button.disabled = false;
  }
});

$("#signout").addEventListener("click", () => signOut("Signed out."));

// ## Health: GET /readyz every 10 s (the checks show with a key that may see them)

let healthTimer = null;

async function refreshHealth() {
  clearTimeout(healthTimer);
  const list = $("#health-checks");
  try {
    const res = await fetch("/readyz", { headers: authHeaders(), cache: "no-store" });
    let body = null;
    try {
      body = await res.json();
    } catch {
      /* no JSON body */
    }
    const ready = res.ok && body?.ready === true;
    setHealth(ready ? "Ready" : `Not ready${body ? "" : ` (HTTP ${res.status})`}`, ready);
    const checks = body?.checks && typeof body.checks === "object" ? Object.entries(body.checks) : [];
    list.replaceChildren(...checks.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, show(value))]));
    if (!body?.ready && body && !checks.length) {
      const { message } = describe(body);
      if (message) list.replaceChildren(el("dt", {}, "detail"), el("dd", {}, message));
    }
  } catch {
    setHealth("Unreachable", false);
    list.replaceChildren();
  }
  $("#health-time").textContent = `checked ${new Date().toLocaleTimeString()}`;
  healthTimer = setTimeout(refreshHealth, HEALTH_MS);
}

/** The state's text, changed only when it changes (it is a live region: no repeated announcements). */
function setHealth(text, ok) {
  const state = $("#health-state");
  if (state.textContent !== text) state.textContent = text;
  state.className = `badge ${ok ? "ok" : "error"}`;
}

/** A check's value as text: a string as is, anything else as JSON. */
function show(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}

$("#health-refresh").addEventListener("click", refreshHealth);

// ## Routes

function route() {
  if (!token.get()) return;
  const hash = location.hash;
  if (hash && !hash.startsWith("#/")) return; // e.g. the skip link's target: no change of view
  const match = /^#\/jobs\/(.+)$/.exec(hash);
  let id = null;
  if (match) {
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = null;
    }
  }
  const listView = $("#list-view");
  const jobSection = $("#job-view");
  if (id !== null) {
    listView.hidden = true;
    jobSection.hidden = false;
    jobs.show(false);
    if (jobView.jobId !== id) jobView.open(id);
    document.title = `Job ${id} — llm-jobs`;
  } else {
    jobView.close();
    jobSection.hidden = true;
    listView.hidden = false;
    jobs.show(true);
    document.title = "llm-jobs";
  }
}

window.addEventListener("hashchange", route);

// the skip link moves focus to the content without touching the hash (the hash is the route)
$("#skip-link").addEventListener("click", (e) => {
  e.preventDefault();
  const target = $("#job-view").hidden ? $("#main") : $("#job-title");
  target.focus();
});

showSignedIn(Boolean(token.get()));
refreshHealth();
