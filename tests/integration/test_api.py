"""The HTTP API run by uvicorn on loopback, with the real store (PostgreSQL), the real queue
(upstash-redis -> the REST adapter -> redis-server) and a drain worker on the real CPU engine."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from handler.worker import Worker
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome, parse_event
from shared.contracts.prepare import Limits
from shared.server.api import create_app
from shared.server.api.auth import digest
from shared.stores.postgres import PostgresStore
from testkit.serve import LoopServer
from tests.conftest import UPSTASH_TOKEN, make_queue
from tests.integration.conftest import engine_settings
from tests.integration.test_persistence import counters_match, rows

KEY = "test-key-1"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "https://grader.vercel.app"


def api_settings(pg, upstash, **kw):
    base = dict(dispatcher="queue", database_url=pg.url, upstash_redis_rest_url=upstash.url,
                upstash_redis_rest_token=UPSTASH_TOKEN, api_keys=f"sha256:{digest(KEY)}, other-plain-key",
                cors_origins=ORIGIN, rate_limit_per_minute=10_000, sse_poll_s=0.1, sse_ping_s=1,
                default_chunk_interval_s=30, lease_s=60, sse_max_streams_per_key=64)
    return engine_settings(**{**base, **kw})


@pytest.fixture
async def api(engine, pg, upstash, redis_server):
    """(client, settings): the API on loopback and a drain worker on the session engine."""
    pg.truncate()
    redis_server.flush()
    settings = api_settings(pg, upstash)
    store = PostgresStore(pg.url)
    queue = make_queue(upstash)
    worker = Worker(engine, queue, store, concurrency=2, lease_s=60, limits=Limits.from_settings(settings),
                    poll_min_s=0.05, poll_max_s=0.2)
    task = asyncio.create_task(worker.run())
    async with LoopServer(create_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=60) as client:
            yield client, settings
    worker.stop()
    await task
    await queue.close()
    await store.close()


def job(job_id: str, n: int, **kw) -> dict:
    return {"id": job_id, "items": [{"custom_id": f"i{i:02d}", "prompt": f"Say the number {i}."} for i in range(n)],
            "sampling": {"max_tokens": 8, "temperature": 0}, **kw}


async def read_sse(client: httpx.AsyncClient, job_id: str, *, last_id: str | None = None,
                   stop_after: int | None = None):
    """(id, event) pairs from the event stream; stops after `stop_after` events (a dropped connection)."""
    out, current_id, data = [], None, []
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("id:"):
                current_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                out.append((current_id, json.loads("".join(data))))
                data = []
                if stop_after and len(out) >= stop_after:
                    break
    return out


async def test_submit_follow_reconnect_and_read_results(api, pg):
    client, _ = api
    r = await client.post("/v1/jobs", json=job("api-1", 24, chunk_size=2))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == "api-1" and body["status"] == "queued" and body["total"] == 24 and body["created"]
    assert body["events_url"] == "/v1/jobs/api-1/events" and body["estimated_time_s"] > 0

    first = await read_sse(client, "api-1", stop_after=3)  # then the connection drops
    rest = await read_sse(client, "api-1", last_id=first[-1][0])
    events = first + rest
    ids = [i for i, _ in events]
    assert len(ids) == len(set(ids)) and events[-1][1]["type"] == "final"
    typed = [parse_event(e) for _, e in events]  # every event on the wire is a valid member of the union
    assert all(isinstance(e, ChunkEvent) for e in typed[:-1]) and isinstance(typed[-1], FinalEvent)
    chunks = [e for _, e in events if e["type"] == "chunk"]
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))  # no gap, no repeat
    got = [res["custom_id"] for c in chunks for res in c["results"]]
    assert sorted(got) == [f"i{i:02d}" for i in range(24)]
    assert events[-1][1]["outcome"] == "completed" and events[-1][1]["summary"]["total"] == 24

    status = (await client.get("/v1/jobs/api-1")).json()
    assert status["status"] == "completed" and status["completed"] + status["failed"] == 24
    assert status["percentage"] == 100.0
    page1 = (await client.get("/v1/jobs/api-1/results", params={"limit": 10})).json()
    assert len(page1["data"]) == 10 and page1["next_after"] == "i09"
    page3 = (await client.get("/v1/jobs/api-1/results", params={"limit": 10, "after": "i19"})).json()
    assert [d["custom_id"] for d in page3["data"]] == ["i20", "i21", "i22", "i23"] and page3["next_after"] is None
    openai = (await client.get("/v1/jobs/api-1/results", params={"format": "openai", "limit": 3})).json()
    line = openai["data"][0]
    assert line["custom_id"] == "i00" and line["response"]["status_code"] == 200
    assert line["response"]["body"]["choices"][0]["message"]["content"]
    assert len(rows(pg, "api-1")) == 24
    counters_match(pg, "api-1")

    again = await client.post("/v1/jobs", json=job("api-1", 24))
    assert again.status_code == 200 and again.json()["created"] is False  # idempotent on the id


async def test_cancel_a_running_job(api):
    client, _ = api
    long = job("api-cancel", 48, chunk_size=2)
    long["sampling"]["max_tokens"] = 64
    assert (await client.post("/v1/jobs", json=long)).status_code == 202
    await read_sse(client, "api-cancel", stop_after=1)
    r = await client.post("/v1/jobs/api-cancel/cancel")
    assert r.status_code == 200 and r.json()["stopped_before_start"] is False
    events = await read_sse(client, "api-cancel")
    assert events[-1][1]["type"] == "final" and events[-1][1]["outcome"] == "cancelled"
    status = (await client.get("/v1/jobs/api-cancel")).json()
    assert status["status"] == "cancelled" and status["completed"] + status["failed"] < 48


async def test_cancel_before_it_runs_and_jsonl_input(api, redis_server):
    client, _ = api
    lines = "\n".join(json.dumps({"custom_id": f"o{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "any", "messages": [{"role": "user", "content": "hi"}],
                                           "max_tokens": 4}}) for i in range(3))
    # a burst of jobs keeps the worker busy, so the last one is still waiting when cancelled
    for i in range(3):
        await client.post("/v1/jobs", json=job(f"api-busy-{i}", 12))
    r = await client.post("/v1/jobs", content=lines, params={"id": "api-jsonl"},
                          headers={"Content-Type": "application/jsonl"})
    assert r.status_code == 202 and r.json()["total"] == 3
    c = (await client.post("/v1/jobs/api-jsonl/cancel")).json()
    if c["stopped_before_start"]:
        assert c["status"] == "cancelled"
    events = await read_sse(client, "api-jsonl")
    assert events[-1][1]["outcome"] == "cancelled" and events[-1][1]["summary"]["total"] == 3


async def test_bad_input_auth_cors_and_health(api):
    client, _ = api
    r = await client.post("/v1/jobs", json={"items": [{"custom_id": "a", "prompt": "x"}, {"custom_id": "b"}]})
    assert r.status_code == 422
    issue = r.json()["detail"][0]
    assert issue["index"] == 1 and "exactly one of" in issue["message"]
    r = await client.post("/v1/jobs", json={**job("bad-2", 2), "sampling": {"temperature": 7}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "sampling.temperature"
    r = await client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"][0]["message"]

    bare = httpx.AsyncClient(base_url=str(client.base_url), timeout=30)
    async with bare:
        assert (await bare.get("/v1/jobs/api-1")).status_code == 401
        wrong = await bare.get("/v1/jobs/api-1", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        plain = await bare.get("/v1/jobs/nope", headers={"Authorization": "Bearer other-plain-key"})
        assert plain.status_code == 404  # the second key works too
        assert (await bare.get("/healthz")).json() == {"status": "ok"}
        ready = await bare.get("/readyz")  # no key: yes or no only
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        ready = await client.get("/readyz")  # a key: the details too
        assert ready.status_code == 200 and ready.json()["checks"]["store"] == "ok"
        assert "queue" in ready.json()["checks"]
        pre = await bare.options("/v1/jobs", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
        other = await bare.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_rate_limit_and_body_limit(pg, upstash, redis_server):
    redis_server.flush()
    settings = api_settings(pg, upstash, rate_limit_per_minute=3, max_body_bytes=2048)
    async with LoopServer(create_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30) as client:
            codes = [(await client.get("/v1/jobs/none")).status_code for _ in range(4)]
            assert codes == [404, 404, 404, 429]
            limited = await client.get("/v1/jobs/none")
            assert int(limited.headers["Retry-After"]) >= 1
    settings = api_settings(pg, upstash, rate_limit_per_minute=0, max_body_bytes=2048)
    async with LoopServer(create_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30) as client:
            big = await client.post("/v1/jobs", json=job("big", 200))
            assert big.status_code == 413


async def test_load_20_jobs_of_20_items_all_complete_each_result_stored_once(api, pg):
    client, _ = api

    async def one(i: int) -> str:
        r = await client.post("/v1/jobs", json=job(f"load-{i:02d}", 20, sampling={"max_tokens": 4}))
        assert r.status_code == 202
        return r.json()["id"]

    ids = await asyncio.gather(*(one(i) for i in range(20)))
    finals = await asyncio.gather(*(read_sse(client, i) for i in ids))
    assert all(f[-1][1]["outcome"] == Outcome.completed for f in finals)
    for job_id in ids:
        assert len(rows(pg, job_id)) == 20
        counters_match(pg, job_id)
    ((n, distinct),) = pg.query("select count(*), count(distinct (job_id, custom_id)) from job_results "
                                "where job_id like 'load-%%'")
    assert n == distinct == 400
