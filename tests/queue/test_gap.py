"""A job's event stream on the queue (docs/architecture.md, "Events"): it expires at every write, and
a reader whose place was trimmed away (EVENTS_MAXLEN) is told so with a `gap` event instead of
silently skipping what it missed. Through the real upstash-redis client, the adapter and redis-server."""

from __future__ import annotations

import redis

from shared.contracts.events import ChunkEvent, FinalEvent, GapEvent
from shared.server.events import QueueEvents, follow
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job, make_queue
from tests.fakes import chunk_event, final_event


async def test_every_write_sets_the_streams_expiry(queue, redis_server):
    await queue.publish("open", chunk_event("open", 1))  # a job that dies here must not leave it forever
    with redis.Redis.from_url(redis_server.url) as r:
        assert 0 < r.ttl("llmjobs:events:open") <= queue.events_ttl_s
        r.persist("llmjobs:events:open")
        await queue.publish("open", chunk_event("open", 2))
        assert 0 < r.ttl("llmjobs:events:open") <= queue.events_ttl_s


async def _trimmed(upstash, job_id: str, n: int = 30, maxlen: int = 10):
    q = make_queue(upstash, events_maxlen=maxlen)
    ids = [await q.publish(job_id, chunk_event(job_id, seq)) for seq in range(1, n + 1)]
    return q, ids


async def test_a_reader_behind_the_trimmed_range_gets_a_gap_then_the_rest(redis_server, upstash):
    redis_server.flush()
    q, ids = await _trimmed(upstash, "long")
    kept = ids[-10:]
    for after in (None, ids[0], ids[5]):  # from the start, or from an id that was trimmed
        got = await q.events("long", after=after, count=100)
        gap = got[0].event
        assert isinstance(gap, GapEvent) and gap.job_id == "long" and gap.missed_after == after
        assert "results" in gap.reason
        assert got[0].id == ids[19]  # the last id trimmed away: resuming from it is not a gap again
        assert [e.id for e in got[1:]] == kept
        assert [e.event.seq for e in got[1:]] == list(range(21, 31))
    assert [e.id for e in await q.events("long", after=ids[19])] == kept  # missed nothing
    assert [e.id for e in await q.events("long", after=ids[24])] == kept[5:]
    assert await q.events("long", after=ids[-1]) == []
    await q.close()


async def test_an_untrimmed_stream_has_no_gap(queue):
    ids = [await queue.publish("short", chunk_event("short", seq)) for seq in (1, 2, 3)]
    assert [e.id for e in await queue.events("short")] == ids
    assert all(isinstance(e.event, ChunkEvent) for e in await queue.events("short"))


async def test_follow_sends_the_gap_then_the_rest_until_final(redis_server, upstash, tmp_path):
    redis_server.flush()
    q, ids = await _trimmed(upstash, "f")
    await q.publish("f", final_event("f", total=30))
    store = SQLiteStore(tmp_path / "jobs.db")
    got = [ev async for ev in follow(QueueEvents(q), store, "f", ids[3], poll_s=0.05)]
    assert isinstance(got[0].event, GapEvent) and got[0].event.missed_after == ids[3]
    assert [type(e.event) for e in got[1:]] == [ChunkEvent] * 9 + [FinalEvent]
    assert [e.event.seq for e in got[1:-1]] == list(range(22, 31))
    got = [ev async for ev in follow(QueueEvents(q), store, "f", got[0].id, poll_s=0.05)]  # resumed: no gap
    assert not any(isinstance(e.event, GapEvent) for e in got) and len(got) == 10
    await store.close()
    await q.close()


async def test_a_job_submitted_again_starts_a_stream_without_an_old_gap(redis_server, upstash):
    redis_server.flush()
    q, _ = await _trimmed(upstash, "again")
    await q.enqueue(make_job(1, id="again"))
    await q.ack(await q.reserve("w", 30))
    assert await q.resubmit(make_job(1, id="again")) is True  # its old events (and trim point) are gone
    first = await q.publish("again", chunk_event("again", 1))
    assert [e.id for e in await q.events("again")] == [first]
    await q.close()
