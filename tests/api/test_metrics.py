"""`GET /metrics` (shared/server/api/metrics_route.py): the job and queue gauges come from the store and the
queue at each scrape (every store; a real queue: redis-server behind the Upstash adapter), a flood of scrapes
shares one look, a store that fails or hangs leaves the gauges as they were (never a 500), only an admin reads it
when credentials are required, and a chunk's trip from the store to SSE is timed. Parsed with prometheus-client's
own parser."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.contracts.errors import StoreUnavailable
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome
from shared.contracts.models import JobStatus, Progress, Summary
from shared.contracts.owners import new_key
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.server.dispatch import QueueDispatcher
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.conftest import make_job
from tests.fakes import RecordingDispatcher

ADMIN = "metrics-admin-key"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with `labels` in a scrape; None when it has none."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://api.test", timeout=30)


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **{"rate_limit_per_minute": 0, "metrics_cache_s": 0, **kw})


def summary() -> Summary:
    return Summary(total=1, completed=1, failed=0, elapsed_s=1.0, items_per_s=1.0, prompt_tokens=0,
                   completion_tokens=0, tokens_per_s=0.0)


async def put(store, job_id: str, status: JobStatus) -> None:
    job = make_job(1, id=job_id)
    await store.accept(job)
    if status is not JobStatus.queued:
        await store.begin(job)
    if status.terminal:
        await store.finish(job_id, status, summary())


async def scrape(client: httpx.AsyncClient, **headers: str) -> str:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


# ## The gauges, from the store and the queue


async def test_jobs_by_state_and_the_queue_come_from_the_store_and_the_queue(store, queue):
    app = create_app(settings(), store=store, dispatcher=QueueDispatcher(queue))
    for job_id, status in [("q1", JobStatus.queued), ("q2", JobStatus.queued), ("r1", JobStatus.running),
                           ("c1", JobStatus.completed), ("f1", JobStatus.failed)]:
        await put(store, job_id, status)
    for k in range(3):
        await queue.enqueue(make_job(1, id=f"d{k}"))
    await queue.enqueue(make_job(1, id="h0"), "high")
    await queue.reserve("w", lease_s=0.2)  # high first: h0 runs, then its worker dies
    await asyncio.sleep(0.4)
    assert await queue.reap() == (1, 0)
    running = await queue.reserve("w", lease_s=30)  # h0 again
    dying = await queue.reserve("w", lease_s=30)  # d0: it fails for good
    assert await queue.nack(dying, "boom", dead_letter=True) == "dead"

    async with client_for(app) as client:
        text = await scrape(client)
        assert {s: sample(text, "llm_jobs_jobs", state=s) for s in JobStatus} == {
            "queued": 2, "running": 1, "completed": 1, "failed": 1, "cancelled": 0}
        assert sample(text, "llm_jobs_queue_depth", priority="default") == 2
        assert sample(text, "llm_jobs_queue_depth", priority="high") == 0
        assert sample(text, "llm_jobs_queue_depth", priority="train") == 0
        assert sample(text, "llm_jobs_queue_running") == 1
        assert sample(text, "llm_jobs_queue_retrying") == 0
        assert sample(text, "llm_jobs_queue_dead_letters") == 1
        assert sample(text, "llm_jobs_queue_lease_expiries") == 1

        # the figures move with the store and the queue (no cache here: METRICS_CACHE_S=0)
        await store.finish("r1", JobStatus.completed, summary())
        assert await queue.nack(running, "try again") == "retry"
        text = await scrape(client)
        assert sample(text, "llm_jobs_jobs", state="running") == 0
        assert sample(text, "llm_jobs_jobs", state="completed") == 2
        assert sample(text, "llm_jobs_queue_running") == 0
        assert sample(text, "llm_jobs_queue_retrying") == 1


async def test_a_flood_of_scrapes_shares_one_look_and_the_look_is_cached(tmp_path):
    looks = 0

    class Counting(SQLiteStore):
        async def count_jobs(self, *, owner=None):
            nonlocal looks
            looks += 1
            await asyncio.sleep(0.2)  # slow enough that the flood overlaps it
            return await super().count_jobs(owner=owner)

    store = Counting(tmp_path / "jobs.db")
    app = create_app(settings(metrics_cache_s=60), store=store, dispatcher=RecordingDispatcher())
    await put(store, "a", JobStatus.queued)
    async with client_for(app) as client:
        texts = await asyncio.gather(*(scrape(client) for _ in range(20)))
        assert looks == 1 and all(sample(t, "llm_jobs_jobs", state="queued") == 1 for t in texts)
        await put(store, "b", JobStatus.queued)
        assert sample(await scrape(client), "llm_jobs_jobs", state="queued") == 1  # within METRICS_CACHE_S
        assert looks == 1
    await store.close()


@pytest.mark.parametrize("how", ["fails", "hangs"])
async def test_a_store_that_fails_or_hangs_leaves_the_gauges_and_the_scrape_answers(tmp_path, caplog, how):
    down = False

    class Flaky(SQLiteStore):
        async def count_jobs(self, *, owner=None):
            if down and how == "fails":
                raise StoreUnavailable("sqlite: database is locked")
            if down:
                await asyncio.sleep(30)
            return await super().count_jobs(owner=owner)

    store = Flaky(tmp_path / "jobs.db")
    app = create_app(settings(http_timeout_s=0.5), store=store, dispatcher=RecordingDispatcher())
    await put(store, "a", JobStatus.completed)
    async with client_for(app) as client:
        assert sample(await scrape(client), "llm_jobs_jobs", state="completed") == 1
        down = True
        await put(store, "b", JobStatus.completed)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="shared.server.metrics"):
            text = await scrape(client)
        assert time.monotonic() - started < 5  # HTTP_TIMEOUT_S bounds the look
        assert sample(text, "llm_jobs_jobs", state="completed") == 1  # the last good figure, not 2, not gone
        assert "the store did not answer" in caplog.text
        down = False
        assert sample(await scrape(client), "llm_jobs_jobs", state="completed") == 2
    await store.close()


# ## Who may read it


async def test_only_an_admin_reads_it_when_credentials_are_required(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    key, rec = new_key("alice")
    await store.create_key(rec)
    app = create_app(settings(api_keys=ADMIN), store=store, dispatcher=RecordingDispatcher())
    async with client_for(app) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer not-a-key"})).status_code == 403
        owner = await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert owner.status_code == 403 and "llm_jobs" not in owner.text
        text = await scrape(client, Authorization=f"Bearer {ADMIN}")
        assert sample(text, "llm_jobs_jobs", state="queued") == 0
    await store.close()


async def test_an_open_server_answers_without_a_key(tmp_path):
    # no credentials configured: `llm-jobs serve` binds loopback only then, as /readyz shows its details
    store = SQLiteStore(tmp_path / "jobs.db")
    app = create_app(settings(), store=store, dispatcher=RecordingDispatcher())
    async with client_for(app) as client:
        assert "llm_jobs_jobs" in await scrape(client)
    await store.close()


# ## Chunk to SSE


class Chunky(RecordingDispatcher):
    """Publishes a chunk stored 0.25 s ago, a chunk from a producer that says nothing of when, then the final."""

    async def submit(self, refs) -> None:
        job_id = refs[0].job_id
        progress = Progress(completed=1, failed=0, total=2, percentage=50, elapsed_s=1, eta_s=None, items_per_s=1,
                            tokens_per_s=0)
        self.events.publish(job_id, ChunkEvent(job_id=job_id, seq=1, results=[], progress=progress,
                                               stored_at=time.time() - 0.25))
        self.events.publish(job_id, ChunkEvent(job_id=job_id, seq=2, results=[], progress=progress))
        self.events.publish(job_id, FinalEvent(job_id=job_id, outcome=Outcome.completed,
                                               summary=Summary.empty(refs[0].total)))


async def test_a_chunk_sent_over_sse_is_timed_from_when_it_was_stored(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    async with LoopServer(create_app(settings(), store=store, dispatcher=Chunky())) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            before = await scrape(client)
            count0 = sample(before, "llm_jobs_chunk_to_sse_seconds_count") or 0
            sum0 = sample(before, "llm_jobs_chunk_to_sse_seconds_sum") or 0
            job = make_job(2, id="timed")
            assert (await client.post("/v1/jobs", json=job.model_dump(mode="json", exclude={"rejected"}))
                    ).status_code == 202
            async with client.stream("GET", "/v1/jobs/timed/events") as r:
                kinds = [line[7:] async for line in r.aiter_lines() if line.startswith("event: ")]
            assert kinds == ["chunk", "chunk", "final"]
            after = await scrape(client)
            assert sample(after, "llm_jobs_chunk_to_sse_seconds_count") == count0 + 1  # the one that says when
            assert 0.25 <= sample(after, "llm_jobs_chunk_to_sse_seconds_sum") - sum0 < 5
            assert sample(after, "llm_jobs_chunk_to_sse_seconds_bucket", le="0.1") == \
                sample(before, "llm_jobs_chunk_to_sse_seconds_bucket", le="0.1")
    await store.close()
