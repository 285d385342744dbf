// The jobs list: newest first, a status filter, "Load more", and a refresh every 3 s while a
// listed job is queued or running.

import { api, seg } from "./api.js";
import { $, ACTIVE, el, say, when } from "./dom.js";

const PAGE = 50;
const POLL_MS = 3000;

export function jobLink(id) {
  return `#/jobs/${seg(id)}`;
}

export class JobsList {
  #rows = []; // the JobViews shown, in order
  #nextAfter = null;
  #timer = null;
  #generation = 0; // each read counts one; an answer to an older read than the last is dropped
  #visible = false;

  constructor() {
    this.body = $("#jobs-table tbody");
    this.filter = $("#status-filter");
    this.more = $("#load-more");
    this.message = $("#jobs-message");
    this.filter.addEventListener("change", () => this.reload());
    $("#refresh-jobs").addEventListener("click", () => this.refresh());
    this.more.addEventListener("click", () => this.loadMore());
  }

  /** Shown (polling while needed) or hidden (no polling). */
  show(visible) {
    this.#visible = visible;
    if (visible) this.refresh();
    else this.#stopPolling();
  }

  reload() {
    this.#rows = [];
    this.#nextAfter = null;
    return this.refresh();
  }

  /** Reads the list again, as many rows as are shown (so "Load more" pages stay). */
  async refresh() {
    const limit = Math.min(500, Math.max(PAGE, this.#rows.length));
    const page = await this.#fetch({ limit });
    if (page) {
      this.#rows = page.data;
      this.#nextAfter = page.next_after;
      this.#render();
    }
    this.#schedule();
  }

  async loadMore() {
    if (!this.#nextAfter) return;
    const page = await this.#fetch({ limit: PAGE, after: this.#nextAfter });
    if (page) {
      const known = new Set(this.#rows.map((j) => j.id));
      this.#rows.push(...page.data.filter((j) => !known.has(j.id)));
      this.#nextAfter = page.next_after;
      this.#render();
    }
    this.#schedule();
  }

  async #fetch({ limit, after }) {
    const generation = ++this.#generation;
    try {
      const q = new URLSearchParams({ limit: String(limit) });
      if (this.filter.value) q.set("status", this.filter.value);
      if (after) q.set("after", after);
      const page = await api(`/v1/jobs?${q}`);
      if (generation !== this.#generation) return null;
      say(this.message, "info", "");
      return page;
    } catch (e) {
      if (generation === this.#generation && !e.unauthorized) say(this.message, "error", e.message, e.lines ?? []);
      return null;
    }
  }

  #render() {
    const rows = this.#rows.map(jobRow);
    if (!rows.length) {
      const text = this.filter.value ? `No ${this.filter.value} jobs.` : "No jobs yet: submit one above.";
      rows.push(el("tr", {}, el("td", { colspan: "5", class: "empty" }, text)));
    }
    this.body.replaceChildren(...rows);
    this.more.hidden = !this.#nextAfter;
  }

  // poll every 3 s while the list is shown and a listed job may still change
  #schedule() {
    this.#stopPolling();
    if (this.#visible && this.#rows.some((j) => ACTIVE.has(j.status))) {
      this.#timer = setTimeout(() => this.refresh(), POLL_MS);
    }
  }

  #stopPolling() {
    clearTimeout(this.#timer);
    this.#timer = null;
  }
}

function jobRow(job) {
  const done = job.completed + job.failed;
  const bar = el("progress", { max: Math.max(job.total, 1), value: job.total ? done : 1,
                               "aria-label": `Progress of job ${job.id}` });
  return el("tr", { dataset: { jobId: job.id } },
    el("td", { dataset: { field: "id" } }, el("a", { href: jobLink(job.id) }, job.id)),
    el("td", { dataset: { field: "status" } }, el("span", { class: `badge ${job.status}` }, job.status)),
    el("td", { dataset: { field: "progress" } }, el("span", { class: "count" }, `${done} / ${job.total}`), " ", bar,
      job.failed ? el("span", { class: "failed-count" }, ` ${job.failed} failed`) : null),
    el("td", { dataset: { field: "model" } }, job.model ?? "—"),
    el("td", { dataset: { field: "created_at" } }, when(job.created_at)));
}
