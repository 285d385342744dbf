"""The queue holds one entry per shard (shared/contracts/shards.py): entries are references, leases
are per shard, and cancel reaches every shard of the job."""

from __future__ import annotations

from shared.contracts.models import JobOptions
from shared.contracts.shards import ShardRef, plan_shards


def refs(job_id: str, total: int = 25, size: int = 10, **options) -> list[ShardRef]:
    return plan_shards(JobOptions(id=job_id, **options), total, size)


async def test_each_shard_is_an_entry_of_its_own_with_its_own_lease(queue):
    for ref in refs("sharded"):
        assert await queue.enqueue(ref) is True
    assert await queue.enqueue(refs("sharded")[1]) is False  # idempotent per entry
    assert (await queue.list())["queued_default"] == ["sharded#0", "sharded#1", "sharded#2"]
    a = await queue.reserve("w1", 30)
    b = await queue.reserve("w2", 30)
    assert (a.entry_id, a.job_id, b.entry_id) == ("sharded#0", "sharded", "sharded#1")
    assert isinstance(a.job, ShardRef) and (a.job.start, a.job.end, a.job.total) == (0, 10, 25)
    assert await queue.ack(a) and not await queue.ack(a)
    assert await queue.extend(b, 30)
    assert (await queue.stats())["running"] == 1


async def test_cancel_removes_every_waiting_shard_and_flags_the_running_ones(queue):
    for ref in refs("c1"):
        await queue.enqueue(ref)
    running = await queue.reserve("w", 30)
    assert running.entry_id == "c1#0"
    assert await queue.cancel("c1") is False  # one shard still runs: it stops at its next chunk and records
    assert await queue.is_cancelled("c1")
    assert await queue.waiting() == 0 and await queue.reserve("w", 30) is None
    assert await queue.nack(running, "cancelled") in ("retry", "dead")
    assert await queue.reserve("w", 30) is None  # a flagged job's shard is never taken again

    for ref in refs("c2"):
        await queue.enqueue(ref)
    assert await queue.cancel("c2") is True  # none had started: nothing else records the outcome
    listed = await queue.list()
    assert not any(e.startswith("c2") for e in listed["queued_default"] + listed["retrying"])


async def test_a_one_shard_job_keeps_its_id_as_the_entry(queue):
    (ref,) = refs("single", total=5)
    await queue.enqueue(ref)
    lease = await queue.reserve("w", 30)
    assert lease.entry_id == lease.job_id == "single" and not lease.job.sharded
    assert await queue.cancel("single") is False
    assert await queue.is_cancelled("single")


async def test_the_priority_of_a_job_puts_its_shards_first(queue):
    from shared.server.dispatch import QueueDispatcher

    dispatcher = QueueDispatcher(queue)
    await dispatcher.submit(refs("normal", total=10))
    await dispatcher.submit(refs("urgent", total=20, priority="high"))
    assert (await queue.list())["queued_high"] == ["urgent#0", "urgent#1"]
    assert (await queue.reserve("w", 30)).entry_id == "urgent#0"


async def test_a_reference_is_small_whatever_the_jobs_size(queue):
    import json

    big = refs("huge", total=100_000, size=1000, template="{{ text }}", system="Be brief.")
    assert len(big) == 100
    assert max(len(json.dumps(r.wire())) for r in big) < 1000
    assert [r.start for r in big[:3]] == [0, 1000, 2000] and big[-1].end == 100_000
