"""Queue semantics through the real upstash-redis client, a REST adapter and a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from shared.contracts.errors import QueueError
from tests.conftest import make_job, make_queue
from tests.fakes import chunk_event, sample_events


async def test_enqueue_is_idempotent_on_job_id(queue):
    job = make_job(2, id="same")
    assert await queue.enqueue(job) is True
    assert await queue.enqueue(job) is False
    assert (await queue.stats())["queued_default"] == 1
    lease = await queue.reserve("w1", lease_s=30)
    assert lease.job == job and lease.attempt == 1
    assert await queue.reserve("w1", lease_s=30) is None


async def test_high_priority_first_then_fifo(queue):
    for name, prio in [("d1", "default"), ("d2", "default"), ("h1", "high")]:
        await queue.enqueue(make_job(1, id=name), prio)
    assert (await queue.list())["queued_default"] == ["d1", "d2"]
    order = [(await queue.reserve("w", 30)).job.id for _ in range(3)]
    assert order == ["h1", "d1", "d2"]


async def test_an_expired_lease_is_reaped_and_redelivered(queue):
    await queue.enqueue(make_job(1, id="j"))
    first = await queue.reserve("dead-worker", lease_s=0.3)
    assert await queue.reserve("w2", 0.3) is None
    await asyncio.sleep(0.5)
    assert await queue.reap() == (1, 0)
    second = await queue.reserve("w2", lease_s=30)
    assert second.job.id == "j" and second.attempt == 2
    assert await queue.ack(first) is False  # the dead worker lost its lease
    assert await queue.ack(second) is True


async def test_heartbeat_keeps_the_lease(queue):
    await queue.enqueue(make_job(1, id="j"))
    lease = await queue.reserve("w", lease_s=0.4)
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await queue.extend(lease, 0.4)
    assert await queue.reap() == (0, 0)


async def test_nack_backs_off_then_dead_letters_with_the_last_error(queue):
    await queue.enqueue(make_job(1, id="poison"))
    outcomes = []
    for attempt in range(1, 4):
        lease = None
        for _ in range(50):  # waits out the backoff (0.2 s, then 0.4 s)
            lease = await queue.reserve("w", 30)
            if lease:
                break
            await asyncio.sleep(0.05)
        assert lease and lease.attempt == attempt
        outcomes.append(await queue.nack(lease, f"boom {attempt}"))
    assert outcomes == ["retry", "retry", "dead"]
    assert await queue.reserve("w", 30) is None
    (dead,) = await queue.dead()
    assert dead["id"] == "poison" and dead["last_error"] == "boom 3" and dead["attempts"] == "3"
    assert (await queue.stats())["dead"] == 1
    assert await queue.requeue("poison")
    assert (await queue.reserve("w", 30)).attempt == 1


async def test_a_job_whose_worker_keeps_dying_ends_in_dead_letter(queue):
    await queue.enqueue(make_job(1, id="crashy"))
    for _ in range(3):
        assert await queue.reserve("w", lease_s=0.1)
        await asyncio.sleep(0.2)
        await queue.reap()
    assert await queue.reserve("w", 30) is None
    assert (await queue.dead())[0]["last_error"] == "lease expired on attempt 3"


async def test_release_hands_the_job_back_without_using_an_attempt(queue):
    await queue.enqueue(make_job(1, id="j"))
    lease = await queue.reserve("w1", 30)
    assert await queue.nack(lease, "shutting down", release=True) == "retry"
    again = await queue.reserve("w2", 30)
    assert again.job.id == "j" and again.attempt == 1


async def test_cancel_removes_a_queued_job_and_flags_a_running_one(queue):
    await queue.enqueue(make_job(1, id="waiting"))
    await queue.enqueue(make_job(1, id="running"))
    assert (await queue.reserve("w", 30)).job.id == "waiting"
    assert await queue.cancel("running") is True
    assert await queue.reserve("w", 30) is None
    assert await queue.cancel("waiting") is False
    assert await queue.is_cancelled("waiting") and await queue.is_cancelled("running")


async def test_events_resume_from_the_last_id_seen(queue):
    for i in range(5):
        await queue.publish("j", chunk_event("j", i + 1))
    first = await queue.events("j", count=2)
    assert [e.event.seq for e in first] == [1, 2]
    rest = await queue.events("j", after=first[-1].id)
    assert [e.event.seq for e in rest] == [3, 4, 5]
    assert await queue.events("j", after=rest[-1].id) == []


async def test_events_are_capped(upstash, redis_server):
    redis_server.flush()
    q = make_queue(upstash, events_maxlen=10)
    for i in range(300):
        await q.publish("capped", chunk_event("capped", i))
    got = await q.events("capped", count=1000)
    assert len(got) < 300 and got[-1].event.seq == 299
    await q.close()


async def test_a_wrong_token_is_a_clear_auth_error(upstash):
    q = make_queue(upstash, token="wrong")
    with pytest.raises(QueueError, match="nauthorized"):
        await q.stats()
    await q.close()


async def test_the_adapter_refuses_blocking_commands_like_upstash(queue):
    from upstash_redis.errors import UpstashError

    with pytest.raises(UpstashError, match="blocking"):
        await queue._redis.execute(["BLPOP", "x", "1"])


async def test_every_event_type_round_trips_through_the_stream(queue, redis_server):
    import redis

    from shared.contracts.events import FinalEvent

    events = sample_events("rt")
    ids = [await queue.publish("rt", e) for e in events]
    got = await queue.events("rt")
    assert [e.id for e in got] == ids
    assert [type(e.event) for e in got] == [type(e) for e in events]
    assert [e.event for e in got] == events
    with redis.Redis.from_url(redis_server.url) as r:  # every write sets the stream's TTL (tests/queue/test_gap.py)
        assert r.ttl("llmjobs:events:rt") > 0
        await queue.publish("open", events[0])
        assert r.ttl("llmjobs:events:open") > 0
    assert isinstance(got[-1].event, FinalEvent)


async def test_a_cancelled_or_dead_job_submitted_again_runs_again_and_a_held_one_is_left_alone(queue):
    from shared.contracts.shards import plan_shards
    from shared.server.dispatch import QueueDispatcher

    dispatcher = QueueDispatcher(queue)
    await dispatcher.submit(plan_shards(make_job(1, id="again"), 1, 1000))
    await queue.publish("again", chunk_event("again", 1))
    assert await queue.cancel("again") is True  # removed before it ran
    assert await queue.reserve("w", 30) is None

    # the lifecycle re-dispatches a cancelled job
    await dispatcher.submit(plan_shards(make_job(1, id="again"), 1, 1000))
    assert not await queue.is_cancelled("again") and await queue.events("again") == []  # old events gone
    lease = await queue.reserve("w", 30)
    assert lease is not None and lease.job_id == "again" and lease.attempt == 1

    assert await queue.resubmit(make_job(1, id="again")) is False  # running: left alone
    assert await queue.nack(lease, "boom", dead_letter=True) == "dead"
    await dispatcher.submit(plan_shards(make_job(1, id="again"), 1, 1000))  # dead-lettered: back with fresh attempts
    assert [d["id"] for d in await queue.dead()] == []
    assert (await queue.reserve("w", 30)).attempt == 1
