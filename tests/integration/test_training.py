"""Fine-tuning on CPU with the real parts (issue 16): `llm-jobs data prepare`, a training job submitted by the
SDK to the API, queued on the real queue (upstash-redis -> the REST adapter -> redis-server), trained by a
worker with trl's SFTTrainer and peft on the embedded SmolLM2-135M, stored in PostgreSQL; then the adapter
served by vLLM in a batch job, and the merged model served by vLLM as a plain model.

One training run (30 steps) is shared by the module's tests."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from handler.runner import run_job
from handler.training.run import Trainer
from handler.worker import Worker
from shared import AsyncClient
from shared.cli import app as cli_app
from shared.contracts.events import FinalEvent, Outcome, TrainEvent
from shared.contracts.models import Item, Job
from shared.contracts.prepare import Limits
from shared.contracts.training import TrainReport
from shared.server.api import create_app
from shared.stores.postgres import PostgresStore
from testkit.serve import LoopServer
from tests.conftest import make_queue
from tests.integration.conftest import engine_settings
from tests.integration.test_api import HEADERS, KEY, api_settings

ADAPTER = "grades-test"
STEPS = 30
QUESTIONS = [("Per què plou?", "condensació"), ("Què fa el cor?", "sang"), ("Què és un primer?", "divisors"),
             ("Per què hi ha estacions?", "inclinació"), ("Què és la fotosíntesi?", "llum")]
FEEDBACK = ["No respon.", "Incorrecte.", "Incompleta.", "Correcte en part.", "Bona.", "Excel·lent."]
PROMPTS = [f"Pregunta: {q}\nResposta: {a} (alumne {n})" for n, (q, a) in enumerate(QUESTIONS * 2, start=300)]


def dataset(path: Path, n: int = 120) -> Path:
    """Short grading examples (prompt/completion) whose answer is always the grading JSON: a format the
    base model does not write, learnable in a few dozen CPU steps."""
    lines = []
    for k in range(n):
        question, key = QUESTIONS[k % len(QUESTIONS)]
        nota = (k * 7 + k // 5) % 6
        answer = key if nota >= 3 else "no ho sé"
        lines.append({"prompt": f"Pregunta: {question}\nResposta: {answer} (alumne {k})",
                      "completion": json.dumps({"nota": nota, "feedback": FEEDBACK[nota]}, ensure_ascii=False)})
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    out = root / "prepared"
    result = CliRunner().invoke(cli_app, ["data", "prepare", str(dataset(root / "grades.jsonl")), "-o", str(out),
                                          "--train-ratio", "0.85", "--seed", "7", "--no-near-dups"])
    assert result.exit_code == 0, result.output
    return out


async def _sse_types(base_url: str, job_id: str, seen: list[tuple[float, str]]) -> None:
    """A second reader: the job's raw SSE stream, as a browser reads it."""
    async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=None) as http:
        async with http.stream("GET", f"/v1/jobs/{job_id}/events") as r:
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                    seen.append((time.monotonic(), kind))
                    if kind == "final":
                        return


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def trained(prepared, pg, upstash, redis_server, tmp_path_factory):
    """Submit the training job through the SDK to the API (queue dispatcher); a worker that trains (no engine)
    runs it. The SDK's events and a raw SSE reader's are kept, with the time each arrived."""
    redis_server.flush()
    settings = api_settings(pg, upstash, training_dir=tmp_path_factory.mktemp("training"))
    store = PostgresStore(pg.url)
    queue = make_queue(upstash)
    worker = Worker(None, queue, store, concurrency=1, lease_s=60, limits=Limits.from_settings(settings),
                    poll_min_s=0.05, poll_max_s=0.2, trainer=Trainer(settings))
    task = asyncio.create_task(worker.run())
    sdk_events: list[tuple[float, object]] = []
    sse: list[tuple[float, str]] = []
    api = create_app(settings)
    async with LoopServer(api) as server:
        async with AsyncClient("http", base_url=server.url, api_key=KEY, settings=settings) as sdk:
            job = await sdk.train(prepared, adapter=ADAPTER, id="train-it", max_steps=STEPS, batch_size=4,
                                  learning_rate=1e-3, save_steps=10, logging_steps=2, eval_steps=10, seed=3)
            reader = asyncio.create_task(_sse_types(server.url, job.id, sse))
            async for event in job.stream():
                sdk_events.append((time.monotonic(), event))
            await asyncio.wait_for(reader, 60)
            record = await sdk.get(job.id)
    await api.state.llm_jobs.lifecycle.close()  # the server runs without its lifespan: close its store here
    worker.stop()
    await task
    await queue.close()
    adapter = await store.get_adapter(ADAPTER)
    await store.close()
    final = sdk_events[-1][1]
    assert isinstance(final, FinalEvent), final
    return {"events": sdk_events, "sse": sse, "final": final, "record": record, "adapter": adapter,
            "settings": settings}


def report_of(trained) -> TrainReport:
    final = trained["final"]
    assert final.outcome is Outcome.completed, final.summary.reason
    return TrainReport.model_validate(final.summary.training)


async def test_the_training_loss_falls_and_held_out_perplexity_drops_below_the_base(trained):
    report = report_of(trained)
    assert report.steps == STEPS and report.resumed_from is None
    losses = [loss for _, loss in report.losses]
    assert len(losses) == STEPS // 2  # a logged loss every 2 steps
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first * 0.6, losses
    assert report.adapter_perplexity < report.base_perplexity * 0.5, (report.base_perplexity,
                                                                      report.adapter_perplexity)
    assert report.eval_loss is not None and report.train_tokens > 0 and report.tokens_per_s > 0
    print(f"\ntraining: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {STEPS} steps; held-out perplexity "
          f"{report.base_perplexity:.2f} -> {report.adapter_perplexity:.2f}; {report.tokens_per_s:.0f} tokens/s "
          f"(CPU); losses {[round(x, 3) for x in losses]}")


async def test_training_events_arrive_over_the_sdk_and_sse_while_the_job_runs(trained):
    events, sse, final_at = trained["events"], trained["sse"], trained["events"][-1][0]
    steps = [e for _, e in events if isinstance(e, TrainEvent) and e.phase == "train"]
    assert [e.step for e in steps] == list(range(2, STEPS + 1, 2))
    assert all(e.loss is not None and e.learning_rate is not None and e.tokens_per_s for e in steps)
    assert steps[0].eta_s > steps[-1].eta_s == 0
    phases = {e.phase for _, e in events if isinstance(e, TrainEvent)}
    assert {"perplexity", "train", "eval", "checkpoint", "export"} <= phases
    first_step_at = next(t for t, e in events if isinstance(e, TrainEvent) and e.phase == "train")
    assert final_at - first_step_at > 5  # streamed as it trained, not delivered at the end
    kinds = [k for _, k in sse]
    assert kinds.count("train") >= len(steps) and kinds[-1] == "final"
    assert next(t for t, k in sse if k == "train") < final_at - 5


async def test_the_adapter_is_exported_and_registered_for_batch_jobs(trained):
    report, rec = report_of(trained), trained["adapter"]
    assert rec is not None and rec.path == report.adapter_dir and rec.job_id == "train-it"
    assert rec.metrics["adapter_perplexity"] == report.adapter_perplexity and rec.config["max_steps"] == STEPS
    adapter, merged = Path(report.adapter_dir), Path(report.merged_dir)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == rec.base_model
    assert (merged / "model.safetensors").is_file() and (merged / "config.json").is_file()
    card = (adapter / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "held-out perplexity, base + adapter" in card
    assert f"{report.adapter_perplexity:,.4g}" in card and (merged / "README.md").read_text() == card
    assert trained["record"]["status"] == "completed"


def greedy(prompt_id: int, adapter: str | None) -> Item:
    return Item(custom_id=f"p{prompt_id}", messages=[{"role": "user", "content": PROMPTS[prompt_id]}],
                adapter=adapter, sampling={"temperature": 0, "max_tokens": 32})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served(trained, pg):
    """The same prompts answered by the base and by base + adapter, on an engine with LoRA on that finds the
    adapter in the store (as a batch job names it)."""
    from handler.engine.vllm_engine import VLLMEngine

    engine = await VLLMEngine.start(engine_settings(enable_lora=True, max_lora_rank=16, max_loras=1))
    store = PostgresStore(pg.url)
    try:
        items = [greedy(k, None) for k in range(len(PROMPTS))]
        items += [greedy(k, ADAPTER).model_copy(update={"custom_id": f"a{k}"}) for k in range(len(PROMPTS))]
        job = Job(id="after-training", items=items)
        assert await store.accept(job)
        events = [e async for e in run_job(job, engine, store=store)]
        assert events[-1].outcome is Outcome.completed, events[-1].summary.reason
        texts = {r.custom_id: r.text for r in await store.results(job.id)}
    finally:
        await store.close()
        await engine.close()
    return {"base": [texts[f"p{k}"] for k in range(len(PROMPTS))],
            "adapter": [texts[f"a{k}"] for k in range(len(PROMPTS))]}


async def test_the_adapter_changes_outputs_in_a_batch_job(served):
    base, tuned = served["base"], served["adapter"]
    assert sum(a != b for a, b in zip(base, tuned, strict=True)) >= len(PROMPTS) - 1
    assert sum(t.startswith('{"nota":') for t in tuned) >= len(PROMPTS) - 1, tuned  # it learned the format
    assert not any(b.startswith('{"nota":') for b in base), base


async def test_the_merged_model_gives_the_same_greedy_outputs_as_base_plus_adapter(trained, served):
    from handler.engine.vllm_engine import VLLMEngine

    merged = report_of(trained).merged_dir
    engine = await VLLMEngine.start(engine_settings(model_name=merged, served_model_name="merged"))
    try:
        job = Job(id="merged", items=[greedy(k, None) for k in range(len(PROMPTS))])
        events = [e async for e in run_job(job, engine)]
        texts = {r.custom_id: r.text for e in events if e.type == "chunk" for r in e.results}
    finally:
        await engine.close()
    assert [texts[f"p{k}"] for k in range(len(PROMPTS))] == served["adapter"]
