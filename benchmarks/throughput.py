"""Throughput: bare vLLM vs. our runner vs. a naive batches-of-10 loop, on one engine; and the planner's
calibration (`--calibrate`).

    python -m benchmarks.throughput [--n 256] [--max-tokens 64] [--chunk-size 10] [--chunk-interval 2]
    python -m benchmarks.throughput --calibrate [--calibration FILE] [--n 64] [--max-tokens 64]

The same N prompts, token for token, go through:
  (a) bare vLLM: every request submitted to AsyncLLM at once;
  (b) our runner: run_job(), with chunking, validation and progress;
  (c) the naive loop seed 003 sketched: sequential generate calls in batches of 10.
Greedy decoding in float32 gives the same tokens whatever the batch, so each mode does the
same work. Also measured: the latency from a chunk's last result to the runner yielding it.

`--calibrate` measures this machine (its GPU, or `cpu`) for `llm-jobs plan` (shared/planning/):
  - cold start: the engine's boot;
  - prefill tokens/s: N prompts of ~270 tokens at once with max_tokens=1 (prompt tokens / time);
  - decode tokens/s: N short prompts written out to --max-tokens (completion tokens / (time - their prefill at the
    rate just measured)), at N in flight (or max_num_seqs if fewer), and again at N/4, so that a plan can fit a
    decode step's time as a + b x sequences and use it at any concurrency (`CalibrationRow.decode_curve`).
It writes the row of (this GPU, this model's size, its dtype) into the calibration table
(shared/planning/calibration.json unless --calibration), kind `measured`, dated, with a source naming the command
and the machine; any row of the same key is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from handler.engine.vllm_engine import VLLMEngine
from handler.runner import run_job
from shared.contracts.events import ChunkEvent
from shared.contracts.models import Item, Job, Sampling
from shared.contracts.prepare import Limits, RequestBuilder
from shared.contracts.settings import Settings
from shared.planning.tables import CalibrationRow, Source

TOPICS = ["the sea", "autumn", "a robot", "coffee", "the moon", "a library", "trains", "mountains",
          "a lost key", "rain", "friendship", "a market", "bicycles", "winter", "a lighthouse", "music"]


def make_job(n: int, max_tokens: int, chunk_size: int) -> Job:
    items = [Item(custom_id=f"b{i}", prompt=f"Write a short story about {TOPICS[i % len(TOPICS)]} (#{i}).")
             for i in range(n)]
    return Job(id="bench", items=items, chunk_size=chunk_size,
               sampling=Sampling(temperature=0.0, max_tokens=max_tokens))


class Stamped:
    """Engine wrapper that records when each result left the engine."""

    def __init__(self, engine: VLLMEngine):
        self.engine = engine
        self.model_name, self.served_models, self.capacity = engine.model_name, engine.served_models, engine.capacity
        self.done_at: dict[str, float] = {}

    async def complete(self, request):
        out = await self.engine.complete(request)
        self.done_at[request.custom_id] = time.perf_counter()
        return out

    async def close(self):
        pass


async def bare(engine: VLLMEngine, job: Job, batch: int | None) -> tuple[float, int]:
    """Submit straight to AsyncLLM: all at once (batch=None) or in sequential batches."""
    builder = RequestBuilder(job, Limits(), engine.served_models)
    reqs = [builder.build(i) for i in job.items]
    prepared = [(engine._prompt_ids(r), r) for r in reqs]
    llm = engine._llm

    async def one(ids, r) -> int:
        final = None
        async for out in llm.generate({"prompt_token_ids": ids}, engine._sampling_params(r, len(ids)),
                                      f"bare-{r.custom_id}-{time.perf_counter_ns()}"):
            final = out
        return len(final.outputs[0].token_ids)

    started = time.perf_counter()
    tokens = 0
    step = batch or len(prepared)
    for k in range(0, len(prepared), step):
        tokens += sum(await asyncio.gather(*(one(ids, r) for ids, r in prepared[k:k + step])))
    return time.perf_counter() - started, tokens


async def runner(engine: VLLMEngine, job: Job, interval: float) -> tuple[float, int, dict[str, list[float]]]:
    """Run the job; per chunk, the latency from its last result to its yield, and the runner's own delay.

    A full chunk is due when its last result arrives. A partial chunk is due at the interval
    deadline (the previous chunk's yield + chunk_interval_s), or at its last result if later;
    it waits for more results until then by design. Delay = yield - due: what the runner adds.
    """
    stamped = Stamped(engine)
    lat: dict[str, list[float]] = {"all": [], "full": [], "partial": [], "delay": []}
    tokens = 0
    started = prev = time.perf_counter()
    async for ev in run_job(job, stamped, chunk_interval_s=interval):
        if isinstance(ev, ChunkEvent):
            now = time.perf_counter()
            last = max(stamped.done_at[r.custom_id] for r in ev.results)
            full = len(ev.results) == job.chunk_size
            due = last if full else max(last, prev + interval)
            lat["all"].append((now - last) * 1000)
            lat["full" if full else "partial"].append((now - last) * 1000)
            lat["delay"].append((now - due) * 1000)
            prev = now
            tokens += sum(r.usage.completion_tokens for r in ev.results if r.usage)
    return time.perf_counter() - started, tokens, lat


def pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if len(xs) > 1 else xs[0]


# ## --calibrate

#: words of filler in each calibration prompt: prefill measured on prompts of a few hundred tokens, not a dozen
PROMPT_WORDS = 200
#: and in the decode passes' prompts: short, so that their time is decode's
DECODE_PROMPT_WORDS = 8
FILLER = ("The committee met on a grey morning to review the harbour records, the repairs to the old pier, the "
          "ferry timetable for the winter months and a letter from the school about the new library. ").split()


def calibration_job(n: int, max_tokens: int, tag: str, words: int = PROMPT_WORDS) -> Job:
    """N distinct prompts of about `words` words each, greedy, `max_tokens` each. `tag` opens every prompt:
    passes with different tags share no prefix, so the engine's prefix cache cannot skip a pass's prefill."""
    items = []
    for i in range(n):
        text = " ".join(FILLER[(i + k) % len(FILLER)] for k in range(words))
        ask = "Summarise these notes in one paragraph." if words >= 20 else "Go on, in your own words."
        items.append(Item(custom_id=f"cal{i}", prompt=f"{tag} #{i} on {TOPICS[i % len(TOPICS)]}: {text}\n{ask}"))
    return Job(id="calibrate", items=items, sampling=Sampling(temperature=0.0, max_tokens=max_tokens))


def this_device() -> tuple[str, str]:
    """(its name in shared/planning/gpus.json, a description of the machine)."""
    from vllm.platforms import current_platform

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if current_platform.is_cpu():
        cpu = "an unknown CPU"
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        except OSError:
            pass
        return "cpu", f"{cpu}, {cores} core(s)"
    import torch

    name = torch.cuda.get_device_name(0)
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    upper = name.upper()
    known = next((g for key, g in (("H200", "H200"), ("H100", "H100"), ("L40S", "L40S"), ("A10G", "A10G"),
                                   ("L4", "L4")) if key in upper), None)
    if "A100" in upper:
        known = "A100-80GB" if gib > 50 else "A100-40GB"
    return known or name, f"{name} ({gib:.1f} GiB), {torch.cuda.device_count()} GPU(s), {cores} CPU core(s)"


async def measure(engine: VLLMEngine, settings: Settings, *, n: int, max_tokens: int, cold_start_s: float
                  ) -> tuple[CalibrationRow, Source]:
    """This machine's calibration row, measured on `engine` (booted in `cold_start_s`): the passes the module
    docstring lists, with N prompts and `max_tokens`. Used by --calibrate and by benchmarks/plan_accuracy.py."""
    from handler.engine.tokens import hub_cache, model_files
    from handler.engine.vllm_engine import resolve_model
    from shared.planning.specs import resolve

    model_config = engine._llm.vllm_config.model_config
    dtype = model_config.quantization or str(model_config.dtype).removeprefix("torch.")
    model_path, served = resolve_model(settings)
    spec = resolve(served, model_files(model_path, settings.model_revision, hub_cache(settings)))
    await bare(engine, make_job(16, 8, 10), None)  # warm-up
    # prefill: N long prompts, one token each
    prefill_job = calibration_job(n, 1, "Notes")
    prompt_tokens = _prompt_tokens(engine, prefill_job)
    t_prefill, _ = await bare(engine, prefill_job, None)
    prefill_tps = prompt_tokens / t_prefill
    # decode: short prompts (their prefill is a small share, taken off at the rate just measured) written out to
    # max_tokens, with N and with N/4 in flight: two points fit the step-time line a plan uses at any concurrency
    concurrency = min(n, engine.max_num_seqs)
    quarter = max(1, n // 4)
    decode: dict[int, tuple[float, int, float]] = {}
    for k, tag in ((n, "Minutes"), (quarter, "Agenda")):
        job = calibration_job(k, max_tokens, tag, words=DECODE_PROMPT_WORDS)
        took, completion = await bare(engine, job, None)
        decode[k] = (took, completion, completion / max(took - _prompt_tokens(engine, job) / prefill_tps, 1e-6))
    t_full, completion, decode_tps = decode[n]
    t_quarter, completion_quarter, decode_quarter = decode[quarter]
    gpu, machine = this_device()
    today = date.today()
    import vllm

    source = Source(name=f"llm-jobs calibrate ({gpu})", url="", note=(
        f"measured on {today} by `python -m benchmarks.throughput --calibrate --n {n} --max-tokens "
        f"{max_tokens}` on {machine}: vLLM {vllm.__version__}, {served}, {dtype}; prefill = {prompt_tokens} "
        f"prompt tokens / a pass of {n} prompts at once with max_tokens=1 ({t_prefill:.2f} s); decode = "
        f"{completion} completion tokens of {n} short prompts / their pass ({t_full:.2f} s) less their prefill, "
        f"and the same with {quarter} ({completion_quarter} tokens, {t_quarter:.2f} s) for the step-time line; "
        "cold start = "
        "the engine's boot in this process, weights on local disk"))
    row = CalibrationRow(gpu=gpu, model=served, params_b=round(spec.params_b, 3), dtype=dtype,
                         tp=settings.tensor_parallel_size, prefill_tps=round(prefill_tps, 1),
                         decode_tps=round(decode_tps, 1), concurrency=concurrency,
                         decode_curve=[(quarter, round(decode_quarter, 1))] if quarter < concurrency else [],
                         cold_start_s=round(cold_start_s, 1), kind="measured", source=source.name, date=today,
                         note=f"prefill: {n} prompts of {prompt_tokens / n:.0f} tokens; decode: {completion / n:.0f} "
                         "output tokens each")
    return row, source


def _prompt_tokens(engine: VLLMEngine, job: Job) -> int:
    builder = RequestBuilder(job, Limits(), engine.served_models)
    return sum(len(engine._prompt_ids(builder.build(i))) for i in job.items)


async def calibrate(args: argparse.Namespace) -> None:
    from shared.planning.tables import CALIBRATION_FILE, load_calibration, load_gpus

    path: Path = args.calibration or CALIBRATION_FILE
    table = load_calibration(path)  # first: a table that does not load fails before the engine boots
    settings = Settings(max_model_len=args.max_model_len)
    started = time.perf_counter()
    engine = await VLLMEngine.start(settings)
    cold = time.perf_counter() - started
    try:
        row, source = await measure(engine, settings, n=args.n or 64, max_tokens=args.max_tokens, cold_start_s=cold)
    finally:
        await engine.close()
    gpu = row.gpu
    print(row.model_dump_json(indent=2))
    if load_gpus().get(gpu) is None:
        print(f"{gpu} is not in shared/planning/gpus.json: add it there (with its datasheet), then run this again; "
              f"{path} is unchanged", file=sys.stderr)
        raise SystemExit(2)
    await asyncio.to_thread(path.write_text, table.with_row(row, source).dump(), encoding="utf-8")
    print(f"{path}: the measured row of ({gpu}, {row.params_b:g}B, {row.dtype}) written")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="prompts [default: 256; 64 with --calibrate]")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=10)
    ap.add_argument("--chunk-interval", type=float, default=2.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--calibrate", action="store_true", help="measure this machine for `llm-jobs plan` and write "
                    "its row into the calibration table")
    ap.add_argument("--calibration", type=Path, default=None, help="the calibration table --calibrate writes "
                    "[default: shared/planning/calibration.json]")
    args = ap.parse_args()
    if args.calibrate:
        await calibrate(args)
        return
    args.n = args.n or 256

    engine = await VLLMEngine.start(Settings(max_model_len=args.max_model_len))
    job = make_job(args.n, args.max_tokens, args.chunk_size)
    await bare(engine, make_job(16, 8, 10), None)  # warm-up

    t_bare, tok_bare = await bare(engine, job, None)
    t_run, tok_run, lat = await runner(engine, job, args.chunk_interval)
    t_naive, tok_naive = await bare(engine, job, 10)
    await engine.close()

    rows = {"bare vLLM (all at once)": (t_bare, tok_bare), "llm-jobs runner": (t_run, tok_run),
            "naive batches of 10": (t_naive, tok_naive)}
    report = {
        "n": args.n, "max_tokens": args.max_tokens, "chunk_size": args.chunk_size,
        "modes": {k: {"seconds": round(t, 2), "items_per_s": round(args.n / t, 2), "tokens_per_s": round(tok / t, 1),
                      "tokens": tok} for k, (t, tok) in rows.items()},
        "runner_vs_bare": round(t_bare / t_run, 3),
        "runner_vs_naive": round(t_naive / t_run, 2),
        "chunk_interval_s": args.chunk_interval,
        "last_result_to_yield_ms": {k: {"p50": round(pct(v, 50), 2), "p95": round(pct(v, 95), 2),
                                        "max": round(max(v), 2), "chunks": len(v)} for k, v in lat.items() if v},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"\n{args.n} prompts, max_tokens={args.max_tokens}, chunk_size={args.chunk_size}, model={engine.model_name}")
    print(f"{'mode':<26}{'seconds':>9}{'items/s':>10}{'tokens/s':>10}{'tokens':>8}")
    for k, m in report["modes"].items():
        print(f"{k:<26}{m['seconds']:>9.2f}{m['items_per_s']:>10.2f}{m['tokens_per_s']:>10.1f}{m['tokens']:>8}")
    print(f"\nrunner / bare  = {report['runner_vs_bare']:.3f}x   (target >= 0.97)")
    print(f"runner / naive = {report['runner_vs_naive']:.2f}x    (target >= 3)")
    print(f"\nlast result -> chunk yield, ms (chunk_size={args.chunk_size}, chunk_interval_s={args.chunk_interval:g}; "
          "target p95 <= 50 ms)")
    names = {"all": "every chunk", "full": "full chunks (size rule)",
             "partial": "partial chunks (interval rule: wait by design)", "delay": "runner delay past due"}
    for k, v in report["last_result_to_yield_ms"].items():
        print(f"  {names[k]:<48} p50 {v['p50']:>8.2f}  p95 {v['p95']:>8.2f}  max {v['max']:>8.2f}  n={v['chunks']}")


if __name__ == "__main__":
    asyncio.run(main())
