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

from shared.contracts.errors import PayloadTooLarge
from shared.contracts.models import Item, Job
from shared.contracts.settings import Settings
from shared.queue import runpod as product
from shared.queue.runpod import RunpodClient
from shared.server.dispatch import RunpodDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from testkit import runpod_api as double

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
        assert "Split it" in e.message and "DISPATCHER=local" in e.message
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


async def test_the_dispatcher_refuses_a_job_over_10_mib_before_sending_or_recording_it(runpod, store):
    dispatcher = RunpodDispatcher(client(runpod), store, retry_s=2)
    lifecycle = JobLifecycle(store, dispatcher, Settings(_env_file=None, store_retry_s=2))
    job = big_job("rp-big", 11 * MIB)
    with pytest.raises(PayloadTooLarge) as refused:
        dispatcher.check(job)
    assert "RunPod" in refused.value.message
    with pytest.raises(PayloadTooLarge):
        await dispatcher.submit(job)  # the dispatcher measures again before sending
    with pytest.raises(PayloadTooLarge):
        await lifecycle.submit(job)  # refused before store.accept: no row, never "queued"
    assert runpod.seen.runs == []
    assert await store.get_job("rp-big") is None
    accepted = await lifecycle.submit(big_job("rp-small", 3000))
    assert accepted.dispatched and len(runpod.seen.runs) == 1
    await dispatcher.close()
