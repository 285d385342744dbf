"""A run's figures (issue 17): item latency percentiles, time to the first chunk, the engine's peak KV-cache
use, and the metrics the runner observes, on a fake engine whose latencies are known exactly (a manual clock
that the engine moves, read by the runner and by `_run_item`)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from handler.engine.kv_stats import KvCacheStats
from handler.progress import ProgressTracker
from handler.runner import run_job
from shared.contracts.errors import ErrorCode
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.models import Job, Result, ResultStatus, Usage, rank_index
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job
from tests.fakes import FakeEngine

#: each item's latency in ms, by custom_id (c0..c19): 10, 20, ... 200 ms, in a shuffled order
LATENCY_MS = {f"c{i}": ms for i, ms in enumerate([70, 10, 200, 40, 150, 30, 120, 90, 60, 180,
                                                  20, 110, 50, 190, 80, 140, 100, 170, 130, 160])}


class Clock:
    """A manual clock: the engine moves it, the runner (and `_run_item`, through time.perf_counter) reads it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TimedEngine(FakeEngine):
    """One request at a time, each taking exactly its LATENCY_MS on the clock; optionally reports KV-cache use
    (`kv`: a reading per item, observed while it runs)."""

    def __init__(self, clock: Clock, *, kv: KvCacheStats | None = None, kv_use: dict[str, float] | None = None,
                 gates: dict[str, asyncio.Event] | None = None, **kw):
        super().__init__(capacity=1, **kw)
        self.clock, self.kv, self.kv_use = clock, kv, kv_use or {}
        #: an item whose time passes only once its event is set (the test saw what came before it)
        self.gates = gates or {}

    async def complete(self, request):
        if request.custom_id in self.gates:
            await self.gates[request.custom_id].wait()
        self.clock.t += LATENCY_MS[request.custom_id] / 1000
        if self.kv is not None and request.custom_id in self.kv_use:
            self.kv.observe(self.kv_use[request.custom_id])
        return await super().complete(request)


class KvEngine(TimedEngine):
    def kv_cache_window(self):
        return self.kv.window()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "perf_counter", c)  # _run_item times items with it
    return c


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def split(events) -> tuple[list[ChunkEvent], FinalEvent]:
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    assert isinstance(events[-1], FinalEvent)
    return chunks, events[-1]


# ## The percentile method


def test_nearest_rank_positions():
    assert [rank_index(4, 50), rank_index(20, 95), rank_index(10, 95), rank_index(1, 95), rank_index(3, 100)] == \
        [1, 18, 9, 0, 2]
    assert rank_index(100, 95) == 94 and rank_index(101, 95) == 95 and rank_index(2, 50) == 0
    for bad in ((0, 50), (3, 0), (3, 101)):
        with pytest.raises(ValueError):
            rank_index(*bad)


def test_the_tracker_takes_nearest_rank_percentiles_of_what_it_recorded():
    p = ProgressTracker(25, skipped_ok=3, clock=Clock())
    for i, ms in enumerate([5.0, 1.0, 4.0, 2.0, 3.0]):
        p.record(Result(custom_id=f"a{i}", status=ResultStatus.ok, text="x", latency_ms=ms))
    p.record(Result.failure("slow", "timeout", "too slow", latency_ms=9.5))  # a failed item with a latency counts
    p.record(Result.failure("refused", "invalid_item", "bad"))  # refused at the edge: no latency, not counted
    s = p.summary()
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == (3.0, 9.5, 9.5)  # 6 values: 3rd and 6th
    assert s.first_chunk_s is None and s.peak_kv_cache is None
    assert ProgressTracker(3, skipped_ok=3).summary().latency_p50_ms is None  # nothing ran


# ## A run's figures


async def test_a_runs_summary_has_exact_latency_percentiles_and_its_first_chunk_time(clock):
    first_seen = asyncio.Event()  # c4's time passes once the first chunk (c0..c3) is out
    engine = TimedEngine(clock, fail={"c4": ErrorCode.timeout}, gates={"c4": first_seen})  # c4 fails, timed
    events = []
    async for e in run_job(make_job(20), engine, chunk_size=4, chunk_interval_s=1e6, clock=clock):
        events.append(e)
        first_seen.set()
    chunks, final = split(events)
    s = final.summary
    assert [r.latency_ms for c in chunks for r in c.results] == [float(LATENCY_MS[f"c{i}"]) for i in range(20)]
    # 10..200 ms: p50 is the 10th (100 ms), p95 the 19th (190 ms), the largest 200 ms
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == (100.0, 190.0, 200.0)
    assert s.first_chunk_s == pytest.approx((70 + 10 + 200 + 40) / 1000)  # the first 4 items, one at a time
    assert s.elapsed_s == pytest.approx(sum(LATENCY_MS.values()) / 1000)
    assert s.failed == 1 and s.peak_kv_cache is None  # the fake engine keeps no KV-cache window


async def test_the_peak_kv_cache_is_the_engines_highest_reading_during_the_run(clock):
    kv = KvCacheStats()
    throughout = kv.window()  # open before the run and after it: every reading reaches it
    kv.observe(0.9)  # before the run: not its peak
    engine = KvEngine(clock, kv=kv, kv_use={"c0": 0.2, "c1": 0.55, "c2": 0.3})
    events = [e async for e in run_job(make_job(3), engine, chunk_size=10, chunk_interval_s=1e6, clock=clock)]
    kv.observe(0.99)  # after it: not either
    assert split(events)[1].summary.peak_kv_cache == 0.55
    assert throughout.peak == 0.99


def test_kv_windows_overlap_and_close():
    kv = KvCacheStats()
    first = kv.window()
    kv.observe(0.4)
    second = kv.window()
    kv.observe(0.2)
    assert (first.peak, second.peak) == (0.4, 0.2)  # a shared engine: each window sees the engine's use
    first.close()
    kv.observe(0.7)
    assert (first.peak, second.peak) == (0.4, 0.7)
    assert kv.window().peak is None  # nothing seen yet


# ## Metrics


async def test_a_run_moves_the_metrics_by_what_it_ran_and_skips_what_was_stored(clock, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    job = make_job(10, id="metrics-job")
    await store.begin(job)
    before_ok = Result(custom_id="c0", status=ResultStatus.ok, text="old", latency_ms=5.0,
                       usage=Usage(prompt_tokens=100, completion_tokens=100, total_tokens=200))
    await store.write(job.id, [before_ok, Result.failure("c1", "timeout", "old", latency_ms=7.0)])  # a run before
    names = ("llm_jobs_prompt_tokens_total", "llm_jobs_completion_tokens_total",
             "llm_jobs_item_latency_seconds_count", "llm_jobs_item_latency_seconds_sum",
             "llm_jobs_store_write_seconds_count")
    was = {n: sample(n) for n in names}
    was_ok, was_error = sample("llm_jobs_items_total", status="ok"), sample("llm_jobs_items_total", status="error")
    engine = TimedEngine(clock, fail={"c5": ErrorCode.timeout})
    progress: list[tuple[float, float]] = []
    started = time.time()
    async for event in run_job(job, engine, store=store, chunk_size=3, chunk_interval_s=1e6, clock=clock):
        if isinstance(event, ChunkEvent):
            progress.append((sample("llm_jobs_shard_progress", job=job.id, shard="0"),
                             (event.progress.completed + event.progress.failed) / 10))
            # stored before it is yielded, and says when
            assert started <= event.stored_at <= time.time()
            assert {r.custom_id for r in event.results} <= set(await store.done_ids(job.id))
        else:
            final = event
    await store.close()
    ran = [f"c{i}" for i in range(2, 10)]  # c0 and c1 were stored: skipped, not counted
    assert final.summary.skipped == 2 and engine.started == ran
    assert sample("llm_jobs_items_total", status="ok") - was_ok == 7
    assert sample("llm_jobs_items_total", status="error") - was_error == 1
    texts = [f"answer to {c}" for c in ran if c != "c5"]
    assert sample(names[0]) - was[names[0]] == 5 * 7  # FakeEngine: 5 prompt tokens an item that answered
    assert sample(names[1]) - was[names[1]] == sum(len(t.split()) for t in texts)
    assert sample(names[2]) - was[names[2]] == 8  # c5 failed, with a latency
    assert sample(names[3]) - was[names[3]] == pytest.approx(sum(LATENCY_MS[c] for c in ran) / 1000)
    assert sample(names[4]) - was[names[4]] == 3  # chunks of 3, 3, 2
    assert progress == [(0.5, 0.5), (0.8, 0.8), (1.0, 1.0)]  # the shard's share done, stored ones included
    assert REGISTRY.get_sample_value("llm_jobs_shard_progress", {"job": job.id, "shard": "0"}) is None  # removed
    s = final.summary
    ms = sorted(LATENCY_MS[c] for c in ran)  # the run's own: the stored c0 and c1 are not in them
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == (ms[3], ms[7], ms[7])


async def test_a_shard_of_several_is_labelled_by_its_index(clock, tmp_path):
    from shared.contracts.shards import plan_shards

    store = SQLiteStore(tmp_path / "jobs.db")
    job = Job(id="sharded", items=make_job(6).items)
    await store.accept(job)
    await store.stage_items(job.id, 0, job.items)
    refs = plan_shards(job, 6, 3)
    seen = []
    async for event in run_job(refs[1], TimedEngine(clock), store=store, chunk_size=10, chunk_interval_s=1e6,
                               clock=clock):
        if isinstance(event, ChunkEvent):
            seen.append(sample("llm_jobs_shard_progress", job=job.id, shard="1"))
        else:
            final = event
    await store.close()
    assert seen == [1.0]
    s = final.summary  # the shard's own items: c3, c4, c5 (40, 150, 30 ms)
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == (40.0, 150.0, 150.0)
    assert REGISTRY.get_sample_value("llm_jobs_shard_progress", {"job": job.id, "shard": "1"}) is None
