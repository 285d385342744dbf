"""A job's plan: on each GPU and platform, does it fit, how long it takes and what it costs; ranked, with a
recommendation and the assumptions behind it (`make_plan`).

The time model, for W workers that each take items / W:

    time = cold start + prompt tokens / prefill tokens/s + output tokens / decode tokens/s

Prefill and decode tokens/s come from the calibration row of that GPU (shared/planning/tables.py): the one of the
model's weight format and nearest size, scaled by parameters when the size differs (a 9B model runs at 8/9 of an
8B row's speed), by GPUs when the tensor parallelism differs, and for decode by the sequences in flight: from
the row's step-time line where it measured decode at several concurrencies (a step of B sequences takes a + b x B
seconds: `CalibrationRow.decode_tps_at`), else in proportion when fewer fit, or there are fewer items, than the
row's concurrency (never raised above the row's). Output tokens are the
mean measured by `--sample` times the items, or else every item's max_tokens: an upper bound.

Cost = time x the GPU's price per second x GPUs per worker x workers, plus a platform's per-container add-on
(Modal's CPU and memory). RunPod's active workers are always on: their cost is the job's share of an always-on
bill, with no cold start. The local machine (`cpu`) costs nothing per second.

Rows are ranked by cost, then time: first the rows billed by use (RunPod flex, Modal, the local machine), then RunPod's
active workers (billed around the clock: they pay off for a steady load, not for one job), then the rows that do
not fit or have no calibration. The recommendation is the first row; when an active worker would be cheaper for
the job, the reason says so.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from shared.planning.fit import (
    GPU_MEMORY_UTILIZATION,
    MAX_NUM_SEQS,
    RULES,
    Fit,
    check_fit,
    kv_dtype_for,
    weight_format,
)
from shared.planning.roofline import TP_EFFICIENCY, tp_factor
from shared.planning.specs import ModelSpec
from shared.planning.tables import CPU, CalibrationRow, Platform, TableInfo, Tables, Tier

#: the GPUs planned when none are named
DEFAULT_GPUS = ("L40S", "A100-80GB", "H100")
#: alternatives shown beside the recommendation
ALTERNATIVES = 3
#: a calibration row of another size than the model's, by more than this share, is scaled (and said so)
SIZE_TOLERANCE = 0.02

PLATFORM_NAMES = {"runpod": "RunPod", "modal": "Modal", "local": "this machine"}


class UnknownGpu(ValueError):
    """A GPU name that is not in gpus.json."""


class PlanOptions(BaseModel):
    """What to plan for."""

    #: the model's name, as shown
    model: str
    gpus: list[str] = Field(default_factory=lambda: list(DEFAULT_GPUS), min_length=1)
    #: one platform, or None for both
    platform: Platform | None = None
    workers: int = Field(default=1, ge=1)
    #: the weights' quantization (awq, gptq, fp8); None: the checkpoint's own, if any
    quantization: Literal["awq", "gptq", "fp8"] | None = None
    #: the weights' dtype; auto: bfloat16 on a GPU, float32 on a CPU (as the engine loads them)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    kv_cache_dtype: Literal["auto", "fp8", "float32", "bfloat16", "float16"] = "auto"
    #: every item's max_tokens, over the job's own
    max_tokens: int | None = Field(default=None, ge=1)
    #: the engine's MAX_MODEL_LEN; None: the job's longest sequence (its longest prompt + max_tokens)
    max_model_len: int | None = Field(default=None, ge=16)
    gpu_memory_utilization: float = Field(default=GPU_MEMORY_UTILIZATION, gt=0, le=1)
    max_num_seqs: int = Field(default=MAX_NUM_SEQS, ge=1)
    #: the local machine's KV cache space (CPU_KVCACHE_SPACE_GIB); None: gpus.json's
    cpu_kv_cache_gib: float | None = Field(default=None, gt=0)


class TokenCounts(BaseModel):
    """A job's tokens, counted with the model's tokenizer (handler/engine/tokens.py `count_tokens`)."""

    #: items counted; items that cannot be built (rejected at load, or by the builder) are not
    items: int = Field(ge=0)
    rejected: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(ge=0)
    prompt_tokens_mean: float = Field(ge=0)
    prompt_tokens_max: int = Field(ge=0)
    #: the largest max_tokens of an item, and the sum over the items: the most they can generate
    max_tokens: int = Field(ge=0)
    completion_tokens_bound: int = Field(ge=0)
    #: items run to measure the output (--sample), and their mean output tokens
    sampled: int = Field(default=0, ge=0)
    output_tokens_mean: float | None = Field(default=None, ge=0)
    #: whose tokenizer counted them
    tokenizer: str | None = None
    #: False: the model's tokenizer was not available, and prompt tokens are estimated from characters
    exact: bool = True

    @classmethod
    def of(cls, prompt_lengths: list[int], max_tokens: list[int], *, rejected: int = 0,
           tokenizer: str | None = None) -> TokenCounts:
        n = len(prompt_lengths)
        return cls(items=n, rejected=rejected, prompt_tokens=sum(prompt_lengths),
                   prompt_tokens_mean=sum(prompt_lengths) / n if n else 0.0,
                   prompt_tokens_max=max(prompt_lengths, default=0), max_tokens=max(max_tokens, default=0),
                   completion_tokens_bound=sum(max_tokens), tokenizer=tokenizer)


class PlanRow(BaseModel):
    """One GPU on one platform (and tier)."""

    gpu: str
    platform: Literal["runpod", "modal", "local"]
    tier: Tier | None = None
    #: GPUs one engine spans (tensor parallelism), and engines (workers) the job is split over
    tp: int
    gpus_per_worker: int
    workers: int
    fits: bool
    why_not: str | None = None
    #: sequences in flight per worker
    concurrency: int = 0
    prefill_s: float | None = None
    decode_s: float | None = None
    cold_start_s: float | None = None
    time_s: float | None = None
    cost_usd: float | None = None
    #: USD per GPU-second, and the platform's per-container add-on per second
    price_per_s: float = 0.0
    addon_per_s: float = 0.0
    #: the calibration row's kind (measured, published, derived), and how it was used
    calibration: str | None = None
    calibration_note: str | None = None

    @property
    def plannable(self) -> bool:
        return self.fits and self.time_s is not None and self.cost_usd is not None

    @property
    def label(self) -> str:
        gpus = f"{self.gpus_per_worker} x {self.gpu}" if self.gpus_per_worker > 1 else self.gpu
        if self.platform == "local":
            return f"{gpus} (this machine)"
        return f"{gpus} on {PLATFORM_NAMES[self.platform]}" + (f" ({self.tier})" if self.tier else "")


class Plan(BaseModel):
    model: str
    params_b: float
    weight_format: str
    tokens: TokenCounts
    options: PlanOptions
    #: the fit check on each GPU
    fits: list[Fit]
    #: ranked by cost, then time; rows that do not fit or have no calibration last
    rows: list[PlanRow]
    recommendation: PlanRow | None
    reason: str
    alternatives: list[PlanRow]
    assumptions: list[str]
    tables: list[TableInfo]


def nearest_row(rows: list[CalibrationRow], params_b: float, fmt: str) -> CalibrationRow | None:
    """The row of the same weight format nearest in size (by ratio), else of any format."""
    same = [r for r in rows if r.dtype == fmt]
    pool = same or rows
    return min(pool, key=lambda r: (abs(math.log(r.params_b / params_b)), r.date.toordinal() * -1), default=None)


def duration(seconds: float) -> str:
    """A rounded duration: 0.4 s, 45 s, 12.5 min, 3.2 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def make_plan(tokens: TokenCounts, spec: ModelSpec, options: PlanOptions, tables: Tables) -> Plan:
    """Every GPU of `options` on every platform that offers it, timed, priced and ranked (module docstring)."""
    unknown = [g for g in options.gpus if tables.gpus.get(g) is None]
    if unknown:
        raise UnknownGpu(f"unknown GPU(s): {', '.join(unknown)}; known: {', '.join(tables.gpus.names)}")
    notes = _Notes()
    items = tokens.items
    workers = max(1, min(options.workers, items))
    per_worker = math.ceil(items / workers) if items else 0
    max_tokens = options.max_tokens or tokens.max_tokens
    bound = items * options.max_tokens if options.max_tokens else tokens.completion_tokens_bound
    measured = tokens.output_tokens_mean is not None and tokens.sampled > 0
    output_mean = tokens.output_tokens_mean if measured else (bound / items if items else 0.0)
    assert output_mean is not None
    output_total = output_mean * items if measured else float(bound)
    max_seq = options.max_model_len or min(spec.max_context, max(tokens.prompt_tokens_max + max_tokens, 16))
    mean_seq = tokens.prompt_tokens_mean + output_mean

    fits: list[Fit] = []
    rows: list[PlanRow] = []
    formats: set[str] = set()
    for name in dict.fromkeys(tables.gpus.get(g).name for g in options.gpus):  # type: ignore[union-attr]
        gpu = tables.gpus.get(name)
        assert gpu is not None
        on_cpu = gpu.name == CPU
        if gpu.kv_cache_gib is not None and options.cpu_kv_cache_gib is not None:
            gpu = gpu.model_copy(update={"kv_cache_gib": options.cpu_kv_cache_gib})
        fmt = weight_format(options.dtype, options.quantization or spec.quantization, on_cpu=on_cpu)
        formats.add(fmt)
        fit = check_fit(spec, gpu, fmt=fmt, kv_dtype=kv_dtype_for(fmt, options.kv_cache_dtype), max_seq_len=max_seq,
                        mean_seq_len=mean_seq, items=per_worker,
                        gpu_memory_utilization=options.gpu_memory_utilization, max_num_seqs=options.max_num_seqs)
        fits.append(fit)
        calib = nearest_row(tables.calibration.of(gpu.name), spec.params_b, fmt)
        timing = _Timing.of(fit, calib, spec, fmt, notes) if fit.fits and calib is not None else None
        if calib is None:
            notes.add("no calibration row: time and cost unknown (python -m benchmarks.throughput --calibrate on "
                      "that machine adds one)", gpu.name)
        offers: list[tuple[str, Tier | None, float]]
        if on_cpu:
            offers = [("local", None, 0.0)]
            notes.add("cpu is this machine: nothing is billed per second, so its cost is 0")
        else:
            offers = [(p.platform, p.tier, p.usd_per_s) for p in tables.prices.of(gpu.name, options.platform)]
            for platform in ([options.platform] if options.platform else ["runpod", "modal"]):
                if not tables.prices.of(gpu.name, platform):
                    notes.add(f"not offered on {PLATFORM_NAMES[platform]} (no price)", gpu.name)
        for platform, tier, price in offers:
            addon = tables.prices.addon(platform)
            addon_per_s = addon.usd_per_s if addon else 0.0
            row = PlanRow(gpu=gpu.name, platform=platform, tier=tier, tp=fit.tp, gpus_per_worker=fit.tp,
                          workers=workers, fits=fit.fits, why_not=fit.why_not, concurrency=fit.concurrency,
                          price_per_s=price, addon_per_s=addon_per_s,
                          calibration=calib.kind if calib else None, calibration_note=timing.note if timing else None)
            if not fit.fits:
                rows.append(row)
                continue
            if timing is None:
                rows.append(row.model_copy(update={"why_not": f"no calibration row for {gpu.name}"}))
                continue
            cold = 0.0 if tier == "active" else timing.cold_start_s
            prefill = tokens.prompt_tokens / workers / timing.prefill_tps
            decode = output_total / workers / timing.decode_tps
            time_s = cold + prefill + decode
            cost = time_s * workers * (price * fit.tp + addon_per_s)
            rows.append(row.model_copy(update={"prefill_s": prefill, "decode_s": decode, "cold_start_s": cold,
                                               "time_s": time_s, "cost_usd": cost}))
            if tier == "active":
                notes.add("RunPod active workers are always on and billed around the clock: the cost shown is this "
                          "job's share of that bill, with no cold start")
            if addon:
                notes.add(f"{PLATFORM_NAMES[platform]} also bills each container's CPU and memory: "
                          f"${addon.usd_per_s:.6f}/s for {addon.cpu_cores:g} cores and {addon.memory_gib:g} GiB")

    # an active worker is billed around the clock: it pays off for a steady load, not for one job, so the rows
    # billed by use come first, and the first of them is the recommendation
    ranked = sorted(rows, key=lambda r: (not r.plannable, r.tier == "active", r.cost_usd or 0.0, r.time_s or 0.0))
    plannable = [r for r in ranked if r.plannable]
    pay_per_use = [r for r in plannable if r.tier != "active"] or plannable
    recommendation = pay_per_use[0] if pay_per_use else None
    alternatives = [r for r in pay_per_use if r is not recommendation][:ALTERNATIVES]
    return Plan(model=spec.name, params_b=round(spec.params_b, 3), weight_format=", ".join(sorted(formats)),
                tokens=tokens, options=options, fits=fits, rows=ranked, recommendation=recommendation,
                reason=_reason(recommendation, plannable, ranked), alternatives=alternatives,
                assumptions=_assumptions(tokens, options, workers, output_mean, bound, max_tokens, max_seq, measured,
                                         notes, tables),
                tables=tables.describe())


class _Notes:
    """Assumptions in the order first met, each once; those about GPUs one line each, naming the GPUs."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}

    def add(self, line: str, gpu: str | None = None) -> None:
        gpus = self._lines.setdefault(line, [])
        if gpu is not None and gpu not in gpus:
            gpus.append(gpu)

    @property
    def lines(self) -> list[str]:
        return [f"{line}: {', '.join(gpus)}" if gpus else line for line, gpus in self._lines.items()]


class _Timing(BaseModel):
    prefill_tps: float
    decode_tps: float
    cold_start_s: float
    note: str

    @classmethod
    def of(cls, fit: Fit, row: CalibrationRow, spec: ModelSpec, fmt: str, notes: _Notes) -> _Timing:
        """The row's throughput for this model, its format and this fit (module docstring), each scaling noted."""
        used = [f"{row.kind} row {row.model or ''} {row.params_b:g}B {row.dtype} tp={row.tp}".replace("  ", " ")]
        scale = 1.0
        if abs(row.params_b / spec.params_b - 1) > SIZE_TOLERANCE:
            scale *= row.params_b / spec.params_b
            used.append(f"scaled by parameters x{row.params_b / spec.params_b:.3g}")
            notes.add("no calibration row of this size: throughput scaled by parameters from the nearest size's "
                      "row", f"{fit.gpu} ({row.params_b:g}B)")
        if row.dtype != fmt:
            used.append(f"a {row.dtype} row for {fmt} weights")
            notes.add(f"no {fmt} calibration row: another format's row is used as it is", f"{fit.gpu} ({row.dtype})")
        if fit.tp != row.tp:
            scale *= tp_factor(fit.tp) / tp_factor(row.tp)
            used.append(f"scaled to tp={fit.tp}")
            notes.add("throughput scaled from the calibration row's GPUs per engine to the plan's (N > 1 GPUs "
                      f"count as N x {TP_EFFICIENCY:g})", f"{fit.gpu} ({row.tp} to {fit.tp})")
        curve = row.decode_tps_at(fit.concurrency)
        if curve is not None:
            decode = curve
            if fit.concurrency != row.concurrency:
                used.append(f"decode at {fit.concurrency} sequences from the row's step-time line")
                notes.add("decode throughput at the plan's sequences in flight from the calibration row's measured "
                          "step times (a step of B sequences takes a + b x B seconds)", fit.gpu)
        else:
            in_flight = min(1.0, fit.concurrency / row.concurrency)
            decode = row.decode_tps * in_flight
            if in_flight < 1:
                used.append(f"decode x{in_flight:.2g} for {fit.concurrency} of {row.concurrency} sequences")
        return cls(prefill_tps=row.prefill_tps * scale, decode_tps=decode * scale,
                   cold_start_s=row.cold_start_s, note="; ".join(used))


def _reason(best: PlanRow | None, plannable: list[PlanRow], ranked: list[PlanRow]) -> str:
    if best is None:
        why = next((r.why_not for r in ranked if r.why_not), None)
        return f"Nothing can be planned: {why}." if why else "Nothing can be planned."
    assert best.time_s is not None and best.cost_usd is not None
    if best.platform == "local":
        text = (f"{best.label} costs nothing per second and takes about {duration(best.time_s)}")
    else:
        text = (f"{best.label} is the cheapest that fits: ${best.cost_usd:.4f} for about {duration(best.time_s)}")
    by_use = [r for r in plannable if r.tier != "active"] or [best]
    quickest = min(r.time_s or 0.0 for r in by_use)
    # the cheapest of those within 5 % of the quickest: a second saved is not worth paying double
    fastest = min((r for r in by_use if (r.time_s or 0.0) <= quickest * 1.05), key=lambda r: r.cost_usd or 0.0)
    if fastest is not best and fastest.time_s is not None and fastest.time_s < best.time_s * 0.95:
        text += f"; the fastest is {fastest.label}: about {duration(fastest.time_s)} for ${fastest.cost_usd:.4f}"
    active = next((r for r in plannable if r.tier == "active"), None)
    if best.tier != "active" and active is not None and (active.cost_usd or 0.0) < best.cost_usd:
        text += (f". {active.label} would cost ${active.cost_usd:.4f} for this job, but an active worker is billed "
                 "around the clock: worth it for a steady load, not for one job")
    return text + "."


def _assumptions(tokens: TokenCounts, options: PlanOptions, workers: int, output_mean: float, bound: int,
                 max_tokens: int, max_seq: int, measured: bool, notes: _Notes, tables: Tables) -> list[str]:
    counted = (f"counted with {tokens.tokenizer or 'the model'}'s tokenizer and chat template" if tokens.exact else
               "ESTIMATED at about 4 characters a token (the model's tokenizer is not available here)")
    lines = [f"prompt tokens {counted}: {tokens.prompt_tokens} over {tokens.items} item(s) "
             f"(mean {tokens.prompt_tokens_mean:.1f}, longest {tokens.prompt_tokens_max})"]
    if tokens.rejected:
        lines.append(f"{tokens.rejected} item(s) cannot be built and are left out")
    if measured:
        lines.append(f"output: {output_mean:.1f} tokens per item, the mean of {tokens.sampled} item(s) run "
                     "(--sample)")
    else:
        lines.append(f"output: at most {max_tokens} tokens per item, {bound} in all: an upper bound, so times and "
                     "costs are too (--sample K measures the mean)")
    lines.append(f"{workers} worker(s), each with its share of the items and its own cold start; the cost counts "
                 "every worker's GPUs")
    lines += [*RULES, f"gpu_memory_utilization {options.gpu_memory_utilization:g}, max_num_seqs "
              f"{options.max_num_seqs}, MAX_MODEL_LEN {max_seq}"
              + ("" if options.max_model_len else " (the job's longest prompt + max_tokens)")]
    lines.append("decode throughput at the plan's sequences in flight: from the calibration row's step-time line "
                 "where it measured several, else in proportion below the row's sequences and never above them")
    lines += list(notes.lines)
    planned = {g.name for g in map(tables.gpus.get, options.gpus) if g is not None}
    kinds = sorted({r.kind for r in tables.calibration.rows if r.gpu in planned})
    if "derived" in kinds:
        lines.append("derived throughput is a roofline estimate from datasheets (calibration.json's sources), not a "
                     "measurement: measure with python -m benchmarks.throughput --calibrate on the GPU")
    lines.append(f"prices as of {tables.prices.updated} ({', '.join(s.name for s in tables.prices.sources)}): "
                 "check them before relying on them")
    return lines
