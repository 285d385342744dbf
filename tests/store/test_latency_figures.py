"""`Store.latency_figures`: a job's item latency over its stored results (nearest-rank p50 and p95, the
largest) and the time from its start to its first stored result, read in the database; and a job of several
shards rolls them up into its summary (handler/rollup.py). Run against SQLite, Postgres and Supabase."""

from __future__ import annotations

import asyncio
import time

from handler.rollup import end_job
from shared.contracts.events import Outcome
from shared.contracts.models import Job, Result, ResultStatus, rank_index

#: latencies in ms of the results written below (one a result), in the order they are written
LATENCIES = [12.5, 3.0, 250.0, 41.0, 7.25, 99.0, 18.0, 3.0, 160.0, 55.5, 27.0, 8.0, 130.0, 64.0, 21.0, 5.5,
             300.0, 77.0, 35.0, 11.0, 180.0]


def results() -> list[Result]:
    out = [Result(custom_id=f"r{i:02d}", status=ResultStatus.ok, text="t", latency_ms=ms)
           for i, ms in enumerate(LATENCIES[:-1])]
    out.append(Result.failure("r20", "timeout", "slow", latency_ms=LATENCIES[-1]))  # failed, timed: counts
    out.append(Result.failure("r21", "invalid_item", "refused at the edge"))  # no latency: not counted
    return out


def expected() -> tuple[float, float, float]:
    ordered = sorted(LATENCIES)
    return ordered[rank_index(len(ordered), 50)], ordered[rank_index(len(ordered), 95)], ordered[-1]


async def test_percentiles_and_the_first_result_come_from_the_stored_results(store):
    began = time.monotonic()
    await store.begin(Job(id="lat-1", items=[]), total=22)
    await asyncio.sleep(0.3)  # the first result comes at least this long after the start
    chunk = results()
    await store.write("lat-1", chunk[:7])
    await store.write("lat-1", chunk[7:])
    got = await store.latency_figures("lat-1")
    assert (got.p50_ms, got.p95_ms, got.max_ms) == expected() == (35.0, 250.0, 300.0)
    assert 0.25 <= got.first_result_s <= time.monotonic() - began + 0.5
    await asyncio.sleep(0.1)
    await store.write("lat-1", chunk[:7])  # a redelivered chunk: its rows keep their first time
    again = await store.latency_figures("lat-1")
    assert again == got


async def test_a_job_without_results_has_no_figures_and_one_without_latencies_has_none_of_those(store):
    assert await store.latency_figures("lat-none") is None  # no such job
    await store.begin(Job(id="lat-2", items=[]), total=1)
    assert await store.latency_figures("lat-2") is None  # no results
    await store.write("lat-2", [Result.failure("a", "invalid_item", "refused")])
    got = await store.latency_figures("lat-2")
    assert (got.p50_ms, got.p95_ms, got.max_ms) == (None, None, None) and got.first_result_s is not None
    await store.begin(Job(id="lat-3", items=[]), total=1)
    await store.write("lat-3", [Result(custom_id="only", status=ResultStatus.ok, text="t", latency_ms=42.0)])
    one = await store.latency_figures("lat-3")
    assert (one.p50_ms, one.p95_ms, one.max_ms) == (42.0, 42.0, 42.0)


async def test_other_jobs_results_do_not_count(store):
    for job_id, ms in (("lat-a", [1.0, 2.0, 3.0]), ("lat-b", [100.0, 200.0, 300.0, 400.0])):
        await store.begin(Job(id=job_id, items=[]), total=len(ms))
        await store.write(job_id, [Result(custom_id=f"x{i}", status=ResultStatus.ok, text="t", latency_ms=v)
                                   for i, v in enumerate(ms)])
    a, b = await store.latency_figures("lat-a"), await store.latency_figures("lat-b")
    assert (a.p50_ms, a.p95_ms, a.max_ms) == (2.0, 3.0, 3.0)
    assert (b.p50_ms, b.p95_ms, b.max_ms) == (200.0, 400.0, 400.0)


async def test_a_job_of_several_shards_rolls_its_latency_up_into_its_summary(store):
    await store.begin(Job(id="lat-roll", items=[]), total=22)
    await store.write("lat-roll", results())
    final = await end_job(store, "lat-roll", Outcome.completed, None, retry_s=2)
    s = final.summary
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == expected()
    assert s.first_chunk_s is not None and s.first_chunk_s >= 0
    assert s.peak_kv_cache is None  # each shard's engine: no store keeps their readings
    stored = await store.get_job("lat-roll")
    assert stored.summary == s
