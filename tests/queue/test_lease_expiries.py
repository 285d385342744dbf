"""`stats()["lease_expiries"]`: every lease that expired and was reaped counts once, whether the reap requeued it
or dead-lettered it (`/metrics`' `llm_jobs_queue_lease_expiries`). Through the real queue (upstash-redis ->
adapter -> redis-server)."""

from __future__ import annotations

import asyncio

from tests.conftest import make_job, make_queue


async def test_a_reaped_lease_counts_once_and_a_live_or_settled_one_never(queue):
    assert (await queue.stats())["lease_expiries"] == 0
    await queue.enqueue(make_job(1, id="dies"))
    await queue.enqueue(make_job(1, id="lives"))
    dies = await queue.reserve("w1", lease_s=0.3)
    lives = await queue.reserve("w2", lease_s=30)
    assert {dies.job_id, lives.job_id} == {"dies", "lives"}
    await asyncio.sleep(0.5)
    assert await queue.reap() == (1, 0)
    assert (await queue.stats())["lease_expiries"] == 1
    assert await queue.reap() == (0, 0)  # nothing more expired: nothing more counted
    assert await queue.ack(lives) is True
    stats = await queue.stats()
    assert stats["lease_expiries"] == 1 and stats["queued_default"] == 1  # the dead worker's job is back


async def test_a_lease_reaped_into_the_dead_letters_counts_too(redis_server, upstash):
    redis_server.flush()
    q = make_queue(upstash, max_attempts=1)
    try:
        await q.enqueue(make_job(1, id="poison"))
        await q.reserve("w", lease_s=0.2)
        await asyncio.sleep(0.4)
        assert await q.reap() == (0, 1)
        stats = await q.stats()
        assert (stats["lease_expiries"], stats["dead"]) == (1, 1)
    finally:
        await q.close()
