"""RunPod's payload limits, in the control-plane double and in the product (issue 12, item 5).

RunPod documents a 10 MB limit on a /run body and 20 MB on /runsync (docs.runpod.io, "Endpoint
operations"). The double (testkit/runpod_api.py) refuses a body over them with 413 and makes no
job; the product measures the /run body before sending it and raises `PayloadTooLarge`, so nothing
is sent, and the lifecycle refuses the job before it is recorded.
"""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio

from handler.platforms.runpod import RunpodHandler
from handler.service import JobService
from shared.contracts.errors import PayloadTooLarge
from shared.contracts.models import Item, Job
from shared.contracts.settings import Settings
from shared.queue import runpod as product
from shared.queue.runpod import RunpodClient
from shared.server.dispatch import RunpodDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from testkit import runpod_api as double
from tests.fakes import FakeEngine

KEY = "rp-limits-key"
ENDPOINT = "ep1"
MIB = 1024 * 1024


@pytest.fixture
def runpod():
    api = double.FakeRunpod(api_key=KEY).start()
    yield api
    api.stop()


@pytest_asyncio.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "jobs.db", timeout_s=5)
    yield s
    await s.close()


def client(runpod) -> RunpodClient:
    return RunpodClient(ENDPOINT, KEY, base_url=f"{runpod.url}/v2", timeout_s=30)


def big_job(job_id: str, total_bytes: int, items: int = 3) -> Job:
    return Job(id=job_id, items=[Item(custom_id=f"c{i}", prompt="x" * (total_bytes // items)) for i in range(items)])


def test_the_product_and_the_double_hold_the_same_limits():
    assert product.RUN_MAX_BYTES == double.RUN_MAX_BYTES == 10 * MIB
    assert product.RUNSYNC_MAX_BYTES == double.RUNSYNC_MAX_BYTES == 20 * MIB


@pytest.mark.parametrize(("operation", "size", "limit"), [("run", 11 * MIB, 10 * MIB),
                                                          ("runsync", 21 * MIB, 20 * MIB)])
async def test_the_double_refuses_a_body_over_the_limit_and_makes_no_job(runpod, operation, size, limit):
    body = b'{"input":{"prompt":"' + b"x" * size + b'"}}'
    async with httpx.AsyncClient(base_url=f"{runpod.url}/v2/{ENDPOINT}", timeout=30,
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}) as h:
        r = await h.post(f"/{operation}", content=body)
        assert r.status_code == 413, r.text[:300]
        error = r.json()["error"]
        assert f"{len(body)} bytes" in error and f"{limit} bytes" in error and f"/{operation}" in error
        assert runpod.seen.runs == []
        # a body under the limit is taken (a /runsync answers with the job's state when its wait is up)
        runpod.runsync_wait_s = 0.1
        ok = await h.post(f"/{operation}", json={"input": {"prompt": "x" * (limit - 100)}})
        assert ok.status_code == 200 and ok.json()["status"] == "IN_QUEUE"
        assert len(runpod.seen.runs) == 1


async def test_the_client_refuses_a_run_over_10_mib_before_sending_it(runpod):
    rp = client(runpod)
    try:
        with pytest.raises(PayloadTooLarge) as refused:
            await rp.run(big_job("too-big", 11 * MIB).wire())
        assert runpod.seen.runs == []  # nothing reached RunPod
        e = refused.value
        assert e.limit == 10 * MIB and e.size > 11 * MIB
        assert "RunPod" in e.message and "10485760 bytes" in e.message and str(e.size) in e.message
        assert "Split it" in e.message and "stage its items in the store" in e.message
        assert (await rp.run({"prompt": "small"}))["status"] == "IN_QUEUE"  # one that fits goes
    finally:
        await rp.aclose()


async def test_the_product_measures_the_body_as_the_double_does(runpod):
    """`run_body` is the body sent, to the byte: the double's limit applies to the same number."""
    job_input = {"prompt": 'x' * 1000 + ' "quoted" \\ ünïcode', "n": 1}
    body = product.run_body(job_input)
    rp = client(runpod)
    try:
        await rp.run(job_input)
    finally:
        await rp.aclose()
    assert runpod.seen.runs[0][1] == job_input
    with pytest.raises(PayloadTooLarge) as refused:
        product.run_body(job_input, limit=len(body) - 1)
    assert refused.value.size == len(body)


async def test_a_30_mb_job_goes_to_runpod_as_references_and_each_shard_runs_from_the_store(runpod, store):
    """The lifecycle stages the items; each /run carries one shard's reference (far under 10 MiB); the
    RunPod handler reads its shard from the store, and the last shard to end completes the job."""
    dispatcher = RunpodDispatcher(client(runpod), store, retry_s=2)
    settings = Settings(_env_file=None, store_retry_s=2, shard_size=10_000)
    lifecycle = JobLifecycle(store, dispatcher, settings)
    n = 30_000
    job = Job(id="rp-big", chunk_size=1000, items=[Item(custom_id=f"c{i:05d}", prompt=f"{i} " + "y" * 1000)
                                                   for i in range(n)])
    assert len(job.model_dump_json()) > 30 * 10**6
    accepted = await lifecycle.submit(job)
    assert accepted.dispatched and accepted.total == n
    runs = runpod.seen.runs
    assert [r[1]["shard"] for r in runs] == [0, 1, 2]
    assert all(len(product.run_body(r[1])) < 4096 for r in runs)  # references, not items
    assert await store.get_dispatch_ref("rp-big") == ",".join(run_id for run_id, _ in runs)

    service = JobService(FakeEngine(capacity=64), settings, store=store)
    handler = RunpodHandler(service)
    outputs = []
    for run_id, job_input in runs:
        out = [o async for o in handler.handle({"id": run_id, "input": job_input})]
        assert all(o.get("results", []) == [] for o in out)  # the worker never holds results
        outputs.append(out[-1])
    assert [o["type"] for o in outputs] == ["final"] * 3
    record = await lifecycle.get("rp-big")
    assert (record.status, record.completed, record.total) == ("completed", n, n)
    assert outputs[-1]["summary"]["completed"] == n  # the last shard ended the job: its rolled-up summary
    assert outputs[0]["summary"]["completed"] == 10_000  # the others: their own
    await dispatcher.close()


async def test_the_dispatcher_refuses_options_over_10_mib_before_sending_or_recording_it(runpod, store):
    dispatcher = RunpodDispatcher(client(runpod), store, retry_s=2)
    lifecycle = JobLifecycle(store, dispatcher, Settings(_env_file=None, store_retry_s=2))
    job = Job(id="rp-heavy", metadata={"blob": "z" * (11 * MIB)}, items=[Item(custom_id="a", prompt="hi")])
    with pytest.raises(PayloadTooLarge) as refused:
        await lifecycle.submit(job)  # refused before store.accept: no row, never "queued"
    assert "RunPod" in refused.value.message and "metadata" in refused.value.message
    assert runpod.seen.runs == []
    assert await store.get_job("rp-heavy") is None
    accepted = await lifecycle.submit(big_job("rp-small", 3000))
    assert accepted.dispatched and len(runpod.seen.runs) == 1
    await dispatcher.close()
