"""`count_jobs`: how many jobs are in each state (`/metrics`' `llm_jobs_jobs`), on SQLite, Postgres and Supabase."""

from __future__ import annotations

import pytest

from shared.contracts.models import JobStatus, Summary
from shared.stores.supabase import SupabaseStore
from tests.conftest import make_job

NONE = {s.value: 0 for s in JobStatus}


def summary() -> Summary:
    return Summary(total=1, completed=1, failed=0, elapsed_s=1.0, items_per_s=1.0, prompt_tokens=0,
                   completion_tokens=0, tokens_per_s=0.0)


async def put(store, job_id: str, status: JobStatus, owner: str | None = None) -> None:
    job = make_job(1, id=job_id, owner=owner)
    await store.accept(job)
    if status is not JobStatus.queued:
        await store.begin(job)
    if status.terminal:
        await store.finish(job_id, status, summary())


async def test_every_state_is_counted_and_the_empty_ones_are_zero(store):
    assert await store.count_jobs() == NONE
    for job_id, status, owner in [("q1", JobStatus.queued, "ann"), ("q2", JobStatus.queued, None),
                                  ("r1", JobStatus.running, "ann"), ("c1", JobStatus.completed, "bob"),
                                  ("c2", JobStatus.completed, "ann"), ("c3", JobStatus.completed, None),
                                  ("f1", JobStatus.failed, "bob")]:
        await put(store, job_id, status, owner)
    assert await store.count_jobs() == {**NONE, "queued": 2, "running": 1, "completed": 3, "failed": 1}
    assert await store.count_jobs(owner="ann") == {**NONE, "queued": 1, "running": 1, "completed": 1}
    assert await store.count_jobs(owner="bob") == {**NONE, "completed": 1, "failed": 1}
    assert await store.count_jobs(owner="nobody") == NONE

    await store.finish("r1", JobStatus.cancelled, summary())  # a job that moves is counted where it is now
    assert await store.count_jobs(owner="ann") == {**NONE, "queued": 1, "completed": 1, "cancelled": 1}


async def test_supabase_counts_with_head_requests_and_reads_no_rows(store):
    if not isinstance(store, SupabaseStore):
        pytest.skip("Supabase's wire only")
    for k in range(3):
        await put(store, f"j{k}", JobStatus.completed)
    transport = store._transport
    transport.log.clear()
    assert (await store.count_jobs())["completed"] == 3
    seen = [s for s in transport.log if s.path.endswith("/jobs")]
    assert len(seen) == len(JobStatus) and {s.method for s in seen} == {"HEAD"}
    assert all("count=exact" in s.headers.get("prefer", "") for s in seen)
