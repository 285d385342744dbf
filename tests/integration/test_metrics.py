"""`/metrics` as a real job runs: the API on loopback with the real store (PostgreSQL), the real queue
(upstash-redis -> the REST adapter -> redis-server) and a queue worker on the real CPU engine, in this process,
so one scrape sees the API's gauges, the runner's counters and vLLM's own `vllm:*`. Parsed with prometheus-client's
parser. The figures before and after one job differ by exactly that job."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from handler.worker import Worker
from shared.contracts.prepare import Limits
from shared.server.api import create_app
from shared.stores.postgres import PostgresStore
from testkit.serve import LoopServer
from tests.conftest import make_queue
from tests.integration.conftest import engine_settings
from tests.integration.test_api import HEADERS, api_settings, job, read_sse

N = 6


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` with `labels` in a scrape (over the labels not named); 0 when none."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def metered():
    """An engine of this module's own. vLLM keeps only the last engine's `vllm:*` collectors in the registry
    (each new AsyncLLM unregisters those before it: vllm/v1/metrics/prometheus.py). A deployment boots one engine
    per process; this test session boots several (LoRA, training, model files), so the session engine's
    `vllm:*` may no longer be the ones a scrape shows. The last one booted, this one, is."""
    from handler.engine.vllm_engine import VLLMEngine

    eng = await VLLMEngine.start(engine_settings())
    yield eng
    await eng.close()


@pytest.fixture
async def api(metered, pg, upstash, redis_server):
    """The API with its metrics looked up at every scrape, and a queue worker on this module's engine."""
    engine = metered
    pg.truncate()
    redis_server.flush()
    settings = api_settings(pg, upstash, metrics_cache_s=0, default_chunk_size=2)
    store = PostgresStore(pg.url)
    queue = make_queue(upstash)
    worker = Worker(engine, queue, store, concurrency=2, lease_s=60, limits=Limits.from_settings(settings),
                    poll_min_s=0.05, poll_max_s=0.2, chunk_size=2)
    task = asyncio.create_task(worker.run())
    async with LoopServer(create_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=60) as client:
            yield client
    worker.stop()
    await task
    await queue.close()
    await store.close()


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    return r.text


async def test_the_figures_move_as_a_real_job_runs(api):
    client = api
    before = await scrape(client)
    assert total(before, "llm_jobs_jobs", state="completed") == 0  # a fresh store
    assert "vllm:prompt_tokens_total" in before  # vLLM's own metrics, in the same registry

    r = await client.post("/v1/jobs", json=job("metered", N))
    assert r.status_code == 202, r.text
    queued = await scrape(client)  # the worker polls every 0.05-0.2 s: the job may be queued or running already
    assert total(queued, "llm_jobs_jobs", state="queued") + total(queued, "llm_jobs_jobs", state="running") == 1

    events = await read_sse(client, "metered")
    assert events[-1][1]["type"] == "final" and events[-1][1]["outcome"] == "completed"
    summary = (await client.get("/v1/jobs/metered")).json()["summary"]
    after = await scrape(client)

    # the API's gauges, from the store and the queue
    assert total(after, "llm_jobs_jobs", state="completed") == 1
    assert total(after, "llm_jobs_jobs", state="queued") == total(after, "llm_jobs_jobs", state="running") == 0
    assert total(after, "llm_jobs_queue_depth") == total(after, "llm_jobs_queue_running") == 0
    assert total(after, "llm_jobs_queue_dead_letters") == total(after, "llm_jobs_queue_lease_expiries") == 0

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # the runner's, exactly this job's (handler/runner.py)
    assert moved("llm_jobs_items_total", status="ok") + moved("llm_jobs_items_total", status="error") == N
    assert moved("llm_jobs_prompt_tokens_total") == summary["prompt_tokens"] > 0
    assert moved("llm_jobs_completion_tokens_total") == summary["completion_tokens"] > 0
    assert moved("llm_jobs_item_latency_seconds_count") == N
    assert moved("llm_jobs_store_write_seconds_count") >= N / 2  # chunks of 2: at least 3 writes
    assert total(after, "llm_jobs_shard_progress", job="metered") == 0  # the series went with the shard
    # the API's: each chunk event read over SSE, timed from when it was stored
    chunks = sum(1 for _, e in events if e["type"] == "chunk")
    assert chunks >= 1 and moved("llm_jobs_chunk_to_sse_seconds_count") == chunks
    # vLLM's own
    assert moved("vllm:request_success_total") == N
    assert moved("vllm:prompt_tokens_total") >= summary["prompt_tokens"]
    assert moved("vllm:generation_tokens_total") == summary["completion_tokens"]
