// The job view (#/jobs/<id>): the job's record, its results (stored ones first, then live from the
// event stream), the rate of progress, cancel and downloads.

import { allResults, api, seg } from "./api.js";
import { drawRateChart, formatRate } from "./chart.js";
import { $, ACTIVE, duration, el, say, sleep, when } from "./dom.js";
import { followEvents, StreamRefused } from "./sse.js";

/** Rows the results table shows at most (the downloads have them all). */
const MAX_ROWS = 5000;
/** The rate is measured over this window. */
const RATE_WINDOW_MS = 10_000;
/** How many one-second points the chart keeps. */
const HISTORY = 300;

export class JobView {
  #id = null;
  #ctl = null; // aborts everything of the open job when the view closes
  #rows = new Map(); // custom_id -> <tr>
  #hidden = 0; // results not shown (over MAX_ROWS)
  #job = null; // the last JobView read, with counters kept monotonic
  #samples = []; // {t, done}: counters seen, for the rate
  #history = []; // items/s, one point a second, for the chart
  #timer = null;
  #lastRecordAt = 0;
  #recordWanted = false;
  #refreshFailed = false; // the message shows a failed background refresh (cleared by the next success)
  #sawChunk = false; // results come with events (else they are re-read from /results)
  #lastReread = 0;
  #rereading = null; // the re-read in flight
  #rereadAgain = false; // one more is needed once it is over

  constructor() {
    this.root = $("#job-view");
    this.title = $("#job-title");
    this.message = $("#job-message");
    this.body = $("#results-table tbody");
    this.canvas = $("#rate-chart");
    this.cancelButton = $("#cancel-job");
    this.cancelButton.addEventListener("click", () => this.#cancel());
    $("#download-ours").addEventListener("click", (e) => this.#download("ours", e.currentTarget));
    $("#download-openai").addEventListener("click", (e) => this.#download("openai", e.currentTarget));
  }

  get jobId() {
    return this.#id;
  }

  open(id) {
    this.close();
    this.#id = id;
    this.#ctl = new AbortController();
    this.#rows.clear();
    this.#hidden = 0;
    this.#job = null;
    this.#samples = [];
    this.#history = [];
    this.#sawChunk = false;
    this.#lastReread = 0;
    this.#rereading = null;
    this.#rereadAgain = false;
    this.#lastRecordAt = 0;
    this.#recordWanted = false;
    this.#refreshFailed = false;
    this.root.dataset.jobId = id;
    this.title.textContent = `Job ${id}`;
    this.body.replaceChildren();
    $("#results-note").textContent = "";
    this.#say("info", "");
    this.#renderJob();
    this.#setStream("idle");
    drawRateChart(this.canvas, []);
    this.title.focus();
    this.#run(this.#ctl.signal);
  }

  /** Leaving the view: the stream, the timers and any read in flight stop. */
  close() {
    this.#ctl?.abort(new DOMException("the job view closed", "AbortError"));
    this.#ctl = null;
    clearInterval(this.#timer);
    this.#timer = null;
    this.#id = null;
  }

  async #run(signal) {
    const id = this.#id;
    try {
      const job = await api(`/v1/jobs/${seg(id)}`, { signal });
      if (signal.aborted) return;
      this.#applyJob(job);
      await this.#loadStored(signal);
      this.#timer = setInterval(() => this.#tick(signal), 1000);
      let lastId = null;
      // a job that ended has every result stored already: nothing to stream
      while (ACTIVE.has(this.#job.status)) {
        let outcome = null;
        lastId = await followEvents(`/v1/jobs/${seg(id)}/events`, {
          signal,
          lastEventId: lastId,
          onState: (state) => this.#setStream(state),
          onEvent: (ev) => {
            const final = this.#onEvent(ev, signal);
            if (final) outcome = final.outcome;
            return Boolean(final);
          },
        });
        // "stopped": no fault of the job's, it waits to run again; follow it once it does
        if (outcome !== "stopped") break;
        this.#setStream("waiting");
        await sleep(5000, signal);
      }
      this.#setStream("ended");
    } catch (e) {
      if (signal.aborted) return;
      this.#setStream("ended");
      const err = e instanceof StreamRefused ? e.apiError : e;
      if (err.unauthorized) return; // the page is back at sign-in
      const text = err.status === 404 ? `No job ${id} (or it is not yours to see).` : err.message;
      this.#say("error", text, err.lines ?? []);
    }
  }

  /** Reads every stored result page (up to MAX_ROWS rows) into the table. */
  async #loadStored(signal) {
    await allResults(this.#id, {
      signal,
      onPage: (rows) => {
        if (!signal.aborted) this.#upsert(rows);
        return this.#rows.size < MAX_ROWS;
      },
    });
  }

  /** Handles one event; returns the `final` event's data (the stream is over), else null. */
  #onEvent(ev, signal) {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return null; // not ours
    }
    switch (ev.type) {
      case "chunk":
        this.#sawChunk = true;
        this.#upsert(data.results ?? []);
        // a shard's progress is only part of the job's: the job's record has the whole
        if (data.progress && data.shard == null) this.#applyCounts(data.progress);
        this.#recordWanted = true;
        break;
      case "progress":
        this.#applyCounts(data);
        this.#recordWanted = true;
        break;
      case "error":
        this.#say("error", `The job failed: ${data.error}`);
        break;
      case "train": // a training job's step (README, "Fine-tuning")
        this.#say("info", trainingLine(data));
        break;
      case "gap": // events were dropped before we read them; every result is stored: read them again
        this.#reread(signal, true);
        break;
      case "final":
        this.#final(data, signal);
        return data;
    }
    return null;
  }

  #final(data, signal) {
    const report = data.summary?.training;
    if (report && typeof report.base_perplexity === "number" && typeof report.adapter_perplexity === "number") {
      data = { ...data, summary: { ...data.summary, reason: data.summary.reason ??
        `held-out perplexity ${report.base_perplexity.toFixed(2)} → ${report.adapter_perplexity.toFixed(2)}` } };
    }
    const s = data.summary ?? {};
    const status = data.outcome === "stopped" ? "queued" : data.outcome;
    this.#applyCounts({ ...s, status }, true);
    const parts = [`Job ${data.outcome}: ${s.completed ?? 0} ok, ${s.failed ?? 0} failed`];
    if (s.elapsed_s) parts.push(`in ${duration(s.elapsed_s)}`);
    const figures = summaryFigures(s);
    if (figures) parts.push(`— ${figures}`);
    if (s.reason) parts.push(`(${s.reason})`);
    if (data.outcome === "stopped") parts.push("— it will run again; waiting for it.");
    this.#say(data.outcome === "completed" ? "ok" : "info", parts.join(" "));
    this.#refreshRecord(signal);
    // results the events did not bring (none, usually, unless the events carry no results)
    const done = (s.completed ?? 0) + (s.failed ?? 0);
    if (this.#rows.size < Math.min(done, MAX_ROWS)) this.#reread(signal, true);
  }

  /**
   * Reads the stored results again (after a gap, at the end, or, where the events bring no
   * results, every few seconds while counters move). Rows are upserted: none shows twice.
   */
  #reread(signal, now = false) {
    if (this.#rereading) {
      this.#rereadAgain ||= now; // it may have passed results stored since it began
      return;
    }
    if (!now && performance.now() - this.#lastReread < 5000) return;
    this.#lastReread = performance.now();
    this.#rereading = this.#loadStored(signal)
      .catch((e) => {
        if (!signal.aborted && !e.unauthorized) this.#say("error", e.message, e.lines ?? []);
      })
      .finally(() => {
        this.#rereading = null;
        if (this.#rereadAgain && !signal.aborted) {
          this.#rereadAgain = false;
          this.#reread(signal, true);
        }
      });
  }

  // once a second: the rate, the chart, and the record every 2 s (sooner after progress events)
  #tick(signal) {
    if (signal.aborted || !this.#job) return;
    const active = ACTIVE.has(this.#job.status);
    const now = performance.now();
    if (active || this.#recordWanted) {
      if (this.#recordWanted ? now - this.#lastRecordAt >= 1000 : now - this.#lastRecordAt >= 2000) {
        this.#refreshRecord(signal);
      }
    }
    if (!active) return;
    this.#sample();
    this.#history.push(this.#rate() ?? 0);
    if (this.#history.length > HISTORY) this.#history.shift();
    drawRateChart(this.canvas, this.#history);
    this.#renderRate();
    const done = this.#job.completed + this.#job.failed;
    if (!this.#sawChunk && done > this.#rows.size && this.#rows.size < MAX_ROWS) this.#reread(signal);
  }

  async #refreshRecord(signal) {
    this.#lastRecordAt = performance.now();
    this.#recordWanted = false;
    try {
      const job = await api(`/v1/jobs/${seg(this.#id)}`, { signal });
      if (signal.aborted) return; // an answer for a view since closed is dropped
      this.#applyJob(job);
      if (this.#refreshFailed) this.#say("info", "");
      this.#refreshFailed = false;
    } catch (e) {
      if (signal.aborted || e.unauthorized) return;
      this.#say("error", `Could not refresh the job: ${e.message}`, e.lines ?? []);
      this.#refreshFailed = true;
    }
  }

  #applyJob(job) {
    const before = this.#job;
    // counters never go back while the view is open (the store may lag behind the events)
    const keep = before && before.completed + before.failed > job.completed + job.failed && !isEnded(job.status);
    this.#job = keep ? { ...job, completed: before.completed, failed: before.failed } : job;
    this.#renderJob();
  }

  #applyCounts(counts, force = false) {
    if (!this.#job) return;
    const done = (counts.completed ?? 0) + (counts.failed ?? 0);
    if (!force && done < this.#job.completed + this.#job.failed) return;
    this.#job = {
      ...this.#job,
      completed: counts.completed ?? this.#job.completed,
      failed: counts.failed ?? this.#job.failed,
      total: counts.total ?? this.#job.total,
      status: counts.status ?? (this.#job.status === "queued" ? "running" : this.#job.status),
    };
    this.#sample();
    this.#renderJob();
  }

  #sample() {
    const now = performance.now();
    this.#samples.push({ t: now, done: this.#job.completed + this.#job.failed });
    while (this.#samples.length > 2 && now - this.#samples[1].t > RATE_WINDOW_MS) this.#samples.shift();
  }

  /** Items per second over the last ~10 s; null until there are 2 s of samples. */
  #rate() {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    if (!first || last.t - first.t < 2000) return null;
    return Math.max(0, (last.done - first.done) / ((last.t - first.t) / 1000));
  }

  #renderJob() {
    const job = this.#job;
    const status = job?.status ?? "loading";
    const done = job ? job.completed + job.failed : 0;
    const total = job?.total ?? 0;
    const badge = $("#job-status");
    badge.textContent = status;
    badge.className = `badge ${status}`;
    const bar = $("#job-progress");
    bar.max = Math.max(total, 1);
    bar.value = job && !total ? 1 : done;
    $("#job-counts").textContent = job ? `${done} / ${total}, ${job.failed} failed` : "—";
    this.cancelButton.disabled = !ACTIVE.has(status);
    const details = $("#job-details");
    if (job) {
      const s = job.summary;
      details.replaceChildren(...[
        ["Model", job.model ?? "—"],
        ["Created", when(job.created_at)],
        ["Started", when(job.started_at)],
        ["Finished", when(job.finished_at)],
        s ? ["Tokens", `${s.prompt_tokens} in, ${s.completion_tokens} out`] : null,
        s && summaryFigures(s) ? ["Figures", summaryFigures(s)] : null,
        job.error ? ["Error", job.error] : null,
      ].filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    } else {
      details.replaceChildren();
    }
    this.#renderRate();
  }

  #renderRate() {
    const job = this.#job;
    const rate = job && ACTIVE.has(job.status) ? this.#rate() : null;
    if (job && isEnded(job.status) && job.summary) {
      $("#job-rate").textContent = `${formatRate(job.summary.items_per_s)} items/s (average)`;
    } else {
      $("#job-rate").textContent = rate === null ? "—" : `${formatRate(rate)} items/s`;
    }
    const left = job ? job.total - job.completed - job.failed : 0;
    $("#job-eta").textContent = rate && left > 0 ? duration(left / rate) : "—";
  }

  #setStream(state) {
    const node = $("#stream-state");
    const labels = { idle: "not connected", connecting: "connecting…", live: "live", reconnecting: "reconnecting…",
                     waiting: "waiting for the job to run again", ended: "ended" };
    node.textContent = labels[state] ?? state;
    node.dataset.state = state;
  }

  /** A message in the view's live region (replacing the last). */
  #say(kind, text, lines = []) {
    this.#refreshFailed = false;
    say(this.message, kind, text, lines);
  }

  /** Adds or updates the results' rows, keyed by custom_id. */
  #upsert(results) {
    const fresh = document.createDocumentFragment();
    for (const r of results) {
      if (!r || typeof r.custom_id !== "string") continue;
      const cells = resultCells(r);
      const row = this.#rows.get(r.custom_id);
      if (row) {
        row.replaceChildren(...cells);
      } else if (this.#rows.size < MAX_ROWS) {
        const tr = el("tr", { dataset: { customId: r.custom_id } }, ...cells);
        this.#rows.set(r.custom_id, tr);
        fresh.append(tr);
      } else {
        this.#hidden += 1;
      }
    }
    this.body.append(fresh);
    if (this.#hidden) {
      $("#results-note").textContent = `Showing the first ${MAX_ROWS} results; download them to see them all.`;
    }
  }

  async #cancel() {
    const signal = this.#ctl?.signal;
    this.cancelButton.disabled = true;
    try {
      const res = await api(`/v1/jobs/${seg(this.#id)}/cancel`, { method: "POST", signal });
      const how = res.stopped_before_start ? "it had not started and will not run"
        : isEnded(res.status) ? "it has ended" : "a running job stops after its current chunk";
      this.#say("ok", `Cancel requested: the job is ${res.status} (${how}).`);
      if (this.#job) this.#applyJob({ ...this.#job, status: res.status });
      this.#refreshRecord(signal);
    } catch (e) {
      if (signal?.aborted || e.unauthorized) return;
      this.#say("error", e.message, e.lines ?? []);
      this.#renderJob();
    }
  }

  /** Saves every result (ours, or OpenAI Batch output lines) as JSONL. */
  async #download(format, button) {
    const id = this.#id;
    if (!id) return;
    button.disabled = true;
    this.#say("info", "Downloading the results…");
    try {
      const rows = await allResults(id, { format, signal: this.#ctl?.signal });
      const text = rows.map((row) => JSON.stringify(row)).join("\n") + (rows.length ? "\n" : "");
      const url = URL.createObjectURL(new Blob([text], { type: "application/jsonl" }));
      const link = el("a", { href: url, download: `${id}.${format === "ours" ? "results" : "openai"}.jsonl`,
                             hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      this.#say("ok", `Saved ${rows.length} results (${format === "ours" ? "ours" : "OpenAI Batch"} format).`);
    } catch (e) {
      if (e.name === "AbortError" || e.unauthorized) return;
      this.#say("error", e.message, e.lines ?? []);
    } finally {
      button.disabled = false;
    }
  }
}

const isEnded = (status) => ["completed", "failed", "cancelled"].includes(status);

/** custom_id, status, the output (parsed JSON pretty-printed, else the text), the error. */
function resultCells(r) {
  let output = "";
  if (r.parsed !== null && r.parsed !== undefined) output = JSON.stringify(r.parsed, null, 2);
  else if (typeof r.text === "string") output = r.text;
  const error = r.error ? [r.error.code, r.error.message].filter(Boolean).join(": ") : "";
  return [
    el("td", { dataset: { field: "custom_id" } }, r.custom_id),
    el("td", { dataset: { field: "status" } }, el("span", { class: `badge ${r.status === "ok" ? "ok" : "error"}` },
      String(r.status ?? ""))),
    el("td", { dataset: { field: "output" } }, output ? el("pre", {}, output) : ""),
    el("td", { dataset: { field: "error" } }, error),
  ];
}

/** One line for a training job's event: step, loss, held-out loss, tokens/s, ETA (all text, never markup). */
function trainingLine(ev) {
  const fixed = (v, n) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(n) : null);
  const parts = [`Training: step ${Number(ev.step) || 0}/${Number(ev.max_steps) || 0}`];
  if (fixed(ev.loss, 4)) parts.push(`loss ${fixed(ev.loss, 4)}`);
  if (fixed(ev.eval_loss, 4)) parts.push(`held-out loss ${fixed(ev.eval_loss, 4)}`);
  if (fixed(ev.perplexity, 3)) parts.push(`held-out perplexity (${String(ev.message ?? "")}) ${fixed(ev.perplexity, 3)}`);
  if (fixed(ev.tokens_per_s, 0)) parts.push(`${fixed(ev.tokens_per_s, 0)} tokens/s`);
  if (fixed(ev.eta_s, 0)) parts.push(`ETA ${fixed(ev.eta_s, 0)} s`);
  if (ev.phase === "checkpoint" || ev.phase === "resume" || ev.phase === "export") {
    parts.push(`${ev.phase}: ${String(ev.message ?? "")}`);
  }
  return parts.join(" · ");
}

/** A summary's figures in one line: item latency p50/p95/max, time to the first results, peak KV cache ("" if none). */
function summaryFigures(s) {
  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const parts = [];
  if (num(s.latency_p50_ms)) {
    parts.push(`latency p50 ${Math.round(s.latency_p50_ms)} ms, p95 ${Math.round(s.latency_p95_ms ?? 0)} ms, ` +
      `max ${Math.round(s.latency_max_ms ?? 0)} ms`);
  }
  if (num(s.first_chunk_s)) {
    parts.push(`first results after ${s.first_chunk_s < 60 ? `${s.first_chunk_s.toFixed(1)} s` : duration(s.first_chunk_s)}`);
  }
  if (num(s.peak_kv_cache)) parts.push(`peak KV cache ${(100 * s.peak_kv_cache).toPrecision(3)} %`);
  return parts.join(" · ");
}
