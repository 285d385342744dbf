// Small DOM helpers. Everything the server or the user sends is put in the page as text
// (textContent, attributes set one by one), never parsed as HTML.

/** An element: el("a", {href: "#/", class: "x"}, "text", otherNode). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value; // e.g. value, max on <progress>
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/**
 * Shows a message in an aria-live region: `kind` is "info", "ok" or "error"; `lines` (optional)
 * become a list under it (e.g. the issues of a 422).
 */
export function say(region, kind, text, lines = []) {
  region.replaceChildren();
  region.className = `message ${kind}`;
  if (!text && !lines.length) {
    region.className = "message";
    return;
  }
  region.append(el("span", {}, text));
  if (lines.length) region.append(el("ul", {}, ...lines.map((line) => el("li", {}, line))));
}

/** A date-time from the API (ISO 8601) in the reader's locale; "—" for none. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** Seconds as "42 s", "3 min 5 s", "2 h 4 min". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export const ACTIVE = new Set(["queued", "running"]);
