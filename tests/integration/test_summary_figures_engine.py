"""A real job's summary figures on the real vLLM CPU engine (issue 17): the engine's peak KV-cache use,
read from vLLM's own scheduler stats through our stat logger (handler/engine/kv_stats.py), and the item
latency percentiles and time to the first chunk."""

from __future__ import annotations

from handler.runner import run_job
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.models import Item, Job, ResultStatus, Sampling, rank_index


async def test_a_real_jobs_summary_has_its_peak_kv_cache_and_latency_figures(engine):
    job = Job(items=[Item(custom_id=f"kv{i}", prompt=f"Count from {i} to {i + 20}, in words.") for i in range(8)],
              sampling=Sampling(max_tokens=48, temperature=0.7))
    events = [e async for e in run_job(job, engine, chunk_size=3, chunk_interval_s=60)]
    final = events[-1]
    assert isinstance(final, FinalEvent)
    results = [r for e in events if isinstance(e, ChunkEvent) for r in e.results]
    assert len(results) == 8 and all(r.status == ResultStatus.ok for r in results)
    s = final.summary
    assert s.peak_kv_cache is not None and 0 < s.peak_kv_cache <= 1  # 8 requests held blocks while they ran
    latencies = sorted(r.latency_ms for r in results)
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == (
        latencies[rank_index(8, 50)], latencies[rank_index(8, 95)], latencies[-1])
    assert s.first_chunk_s is not None and 0 < s.first_chunk_s <= s.elapsed_s
    # a window opened now has seen nothing yet: the run's peak was its own
    window = engine.kv_cache_window()
    assert window.peak is None
    window.close()
