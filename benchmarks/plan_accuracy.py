"""The planner against the time a job really takes, on this machine (issue 17).

    python -m benchmarks.plan_accuracy [--calibrate-n 32] [--calibrate-max-tokens 64] [--n 128]
                                      [--max-tokens 96] [--sample 8]

1. Boot the engine (its boot time is the calibration's cold start).
2. Calibrate this machine with ONE job: `benchmarks.throughput.measure` (N prompts of ~250 tokens, a prefill
   pass and a full pass), written to a throwaway calibration table, never the package's.
3. Plan a second job of another shape: 4x the items, short prompts of another length, another max_tokens.
   Its prompt tokens are counted with the tokenizer (handler/engine/tokens.py), and `--sample K` of its items
   run to measure their mean output, as `llm-jobs plan --sample K` does.
4. Run that job through the runner on the same (warm) engine, and compare: the plan's prefill + decode against
   the run, and the plan's cold start + prefill + decode against the boot + the run.

A benchmark, not a test: the figure goes in the README ("Planning a job").
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.throughput import measure
from handler.engine.tokens import count_tokens, sample_output
from handler.engine.vllm_engine import VLLMEngine
from handler.runner import run_job
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.models import Item, Job, Sampling
from shared.contracts.settings import Settings
from shared.planning.options import plan_options
from shared.planning.plan import make_plan
from shared.planning.specs import resolve
from shared.planning.tables import CALIBRATION_FILE, load_calibration, load_tables

QUESTIONS = ["Explain why the sky is blue.", "List five uses of a paperclip.", "Describe a walk in the woods.",
             "How does a bicycle stay upright?", "Write a letter to a friend about a trip to the sea.",
             "What makes bread rise?", "Tell a short fable about a fox and a crow.", "Why do cats purr?"]


def second_job(n: int, max_tokens: int) -> Job:
    """Chats, not the calibration's plain prompts: short questions (~30 tokens with the chat template)."""
    items = [Item(custom_id=f"q{i:04d}", messages=[{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} "
                                                    f"(Answer {i}.)"}]) for i in range(n)]
    return Job(id="plan-accuracy", items=items, sampling=Sampling(temperature=0.0, max_tokens=max_tokens))


async def main(a: argparse.Namespace) -> None:
    settings = Settings(_env_file=None)
    started = time.perf_counter()
    engine = await VLLMEngine.start(settings)
    boot = time.perf_counter() - started
    try:
        row, source = await measure(engine, settings, n=a.calibrate_n, max_tokens=a.calibrate_max_tokens,
                                    cold_start_s=boot)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "calibration.json"
            base = load_calibration(CALIBRATION_FILE)
            only_ours = base.model_copy(update={"rows": [r for r in base.rows if r.gpu != row.gpu]})
            path.write_text(only_ours.with_row(row, source).dump(), encoding="utf-8")
            tables = load_tables(path)
        job = second_job(a.n, a.max_tokens)
        counts = count_tokens(job, engine._tokenizer, served_models=engine.served_models, name=engine.model_name)
        if a.sample:
            counts = await sample_output(job, engine, a.sample, counts)
        spec = resolve(engine.model_name, Path(engine._llm.vllm_config.model_config.model))
        options = plan_options(settings, model=engine.model_name, gpus=["cpu"], max_tokens=a.max_tokens)
        plan = make_plan(counts, spec, options, tables)
        (planned,) = [r for r in plan.rows if r.gpu == "cpu"]
        assert planned.time_s is not None and planned.cold_start_s is not None
        run_started = time.perf_counter()
        written = 0
        final = None
        async for ev in run_job(job, engine):
            if isinstance(ev, ChunkEvent):
                written += sum(r.usage.completion_tokens for r in ev.results if r.usage)
            elif isinstance(ev, FinalEvent):
                final = ev
        ran = time.perf_counter() - run_started
    finally:
        await engine.close()
    assert final is not None and final.summary.completed == a.n, final
    warm_pred = planned.time_s - planned.cold_start_s
    print(f"calibration (one job): {a.calibrate_n} prompts of ~{row.note}; prefill {row.prefill_tps:g} tok/s, "
          f"decode {row.decode_tps:g} tok/s at {row.concurrency} sequences, cold start {row.cold_start_s:g} s")
    print(f"second job: {counts.items} chat items (4x), {counts.prompt_tokens_mean:.0f} prompt tokens each "
          f"(calibration: ~{row.note.split(' of ')[1].split(' tokens')[0]}), max_tokens {a.max_tokens}; "
          f"sampled {counts.sampled} items: {counts.output_tokens_mean:.1f} mean output tokens; "
          f"really wrote {written / a.n:.1f} per item")
    print(f"plan on cpu: {planned.concurrency} sequences, prefill {planned.prefill_s:.1f} s, decode "
          f"{planned.decode_s:.1f} s, cold start {planned.cold_start_s:.1f} s ({planned.calibration_note}); "
          f"decode curve {row.decode_curve}")
    print(f"{'':<34}{'planned s':>10}{'actual s':>10}{'error':>8}")
    for label, pred, actual in (("run on a warm engine", warm_pred, ran),
                                ("cold start + run", planned.time_s, boot + ran)):
        print(f"{label:<34}{pred:>10.1f}{actual:>10.1f}{(pred - actual) / actual:>+8.0%}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibrate-n", type=int, default=32, help="prompts in the calibration job")
    ap.add_argument("--calibrate-max-tokens", type=int, default=64)
    ap.add_argument("--n", type=int, default=128, help="items in the planned job (4x the calibration's)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--sample", type=int, default=8, help="items run first to measure the mean output length")
    asyncio.run(main(ap.parse_args()))
