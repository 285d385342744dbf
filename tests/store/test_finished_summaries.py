"""`finished_summaries`: what estimates are measured from, on SQLite, Postgres and Supabase."""

from __future__ import annotations

import asyncio

from shared.contracts.models import JobStatus, Summary
from tests.conftest import make_job


def summary(done: int, elapsed_s: float) -> Summary:
    return Summary(total=done, completed=done, failed=0, elapsed_s=elapsed_s, items_per_s=done / elapsed_s,
                   prompt_tokens=0, completion_tokens=0, tokens_per_s=0.0)


async def test_the_models_completed_jobs_newest_first(store):
    assert await store.finished_summaries("m") == []
    for name, model, status, done in [("a", "m", JobStatus.completed, 10), ("b", None, JobStatus.completed, 20),
                                      ("c", "m", JobStatus.failed, 30), ("d", "m", JobStatus.completed, 40),
                                      ("e", "other", JobStatus.completed, 50), ("f", "m", JobStatus.running, 60)]:
        job = make_job(2, id=name, model=model)
        await store.accept(job)
        await store.begin(job)
        if status is not JobStatus.running:
            await store.finish(name, status, summary(done, 2.0))
        await asyncio.sleep(0.01)  # finished_at orders them
    assert [s.completed for s in await store.finished_summaries("m")] == [40, 10]
    assert [s.completed for s in await store.finished_summaries("m", limit=1)] == [40]
    assert [s.completed for s in await store.finished_summaries(None)] == [20]  # jobs that named no model
    assert await store.finished_summaries("nobody") == []


async def test_a_tasks_jobs_are_measured_apart(store):
    for name, task, done in [("t1", "grade-ca", 10), ("t2", None, 20), ("t3", "grade-ca", 30)]:
        job = make_job(2, id=name, model="m", task=task)
        await store.begin(job)
        await store.finish(name, JobStatus.completed, summary(done, 2.0))
        await asyncio.sleep(0.01)
    assert [s.completed for s in await store.finished_summaries("m", "grade-ca")] == [30, 10]
    assert [s.completed for s in await store.finished_summaries("m")] == [20]
    assert (await store.get_job("t1")).task == "grade-ca"
