"""Throughput: bare vLLM vs. our runner vs. a naive batches-of-10 loop, on one engine.

    python -m benchmarks.throughput [--n 256] [--max-tokens 64] [--chunk-size 10] [--chunk-interval 2]

The same N prompts, token for token, go through:
  (a) bare vLLM: every request submitted to AsyncLLM at once;
  (b) our runner: run_job(), with chunking, validation and progress;
  (c) the naive loop seed 003 sketched: sequential generate calls in batches of 10.
Greedy decoding in float32 gives the same tokens whatever the batch, so each mode does the
same work. Also measured: the latency from a chunk's last result to the runner yielding it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from handler.engine.vllm_engine import VLLMEngine
from handler.runner import run_job
from shared.contracts.events import ChunkEvent
from shared.contracts.models import Item, Job, Sampling
from shared.contracts.prepare import Limits, RequestBuilder
from shared.contracts.settings import Settings

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


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=10)
    ap.add_argument("--chunk-interval", type=float, default=2.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()

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
