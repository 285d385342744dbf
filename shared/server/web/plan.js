// The plan shown before a job is submitted (POST /v1/plan; README, "Planning a job"): each GPU and platform
// ranked by cost, then time, the recommendation and its reason, alternatives, and the assumptions made.

import { el, duration } from "./dom.js";

const money = (row) => row.cost_usd === null || row.cost_usd === undefined ? "—"
  : row.platform === "local" ? "$0 (local)" : `$${row.cost_usd.toFixed(4)}`;
const secs = (s) => s === null || s === undefined ? "—" : s < 1 ? `${s.toFixed(1)} s` : duration(s);

function where(row) {
  const platform = { runpod: "RunPod", modal: "Modal", local: "this machine" }[row.platform] ?? row.platform;
  const tier = row.tier ? ` (${row.tier})` : "";
  const tp = row.tp > 1 ? ` × ${row.tp} GPUs` : "";
  const workers = row.workers > 1 ? `, ${row.workers} workers` : "";
  return `${row.gpu}${tp} on ${platform}${tier}${workers}`;
}

/** Renders `plan` (shared/planning/plan.py Plan) into `region`. */
export function showPlan(region, plan) {
  const t = plan.tokens;
  const output = t.output_tokens_mean !== null && t.output_tokens_mean !== undefined
    ? `${t.output_tokens_mean.toFixed(1)} mean output tokens` : `at most ${t.completion_tokens_bound} output tokens`;
  const rows = plan.rows.filter((r) => r.fits && r.time_s !== null);
  const best = plan.recommendation;
  const isBest = (r) => best && r.gpu === best.gpu && r.platform === best.platform && r.tier === best.tier;
  const table = el("table", { class: "plan-table" },
    el("thead", {}, el("tr", {}, ...["#", "where", "sequences", "start", "time", "cost"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r, i) => el("tr", { class: isBest(r) ? "best" : undefined },
      el("td", {}, String(i + 1)), el("td", {}, where(r)), el("td", {}, String(r.concurrency)),
      el("td", {}, secs(r.cold_start_s)), el("td", {}, secs(r.time_s)), el("td", {}, money(r))))));
  const unfit = plan.rows.filter((r) => !r.fits);
  const seen = new Set();
  region.replaceChildren(
    el("h3", {}, `Plan for ${plan.model}: ${t.items} items, ${t.prompt_tokens} prompt tokens, ${output}`),
    best ? el("p", { class: "recommended" }, el("strong", {}, "Recommended: "), where(best)) : null,
    el("p", {}, plan.reason),
    el("div", { class: "table-wrap" }, table),
    ...unfit.filter((r) => !seen.has(r.gpu) && seen.add(r.gpu))
      .map((r) => el("p", { class: "hint" }, `${r.gpu} does not fit: ${r.why_not ?? "no figures"}`)),
    el("details", {}, el("summary", {}, "Assumptions"), el("ul", {}, ...plan.assumptions.map((a) => el("li", {}, a)))),
  );
  region.hidden = false;
}
