"""One behaviour suite, run against the SQLite, Postgres and Supabase (supabase-py -> PostgREST
adapter -> real Postgres) backends."""

from __future__ import annotations

from shared.contracts.models import Job, JobStatus, Result, ResultStatus, Summary, Usage
from tests.conftest import make_job


def ok(cid: str, text: str = "hi", parsed=None) -> Result:
    return Result(custom_id=cid, status=ResultStatus.ok, text=text, parsed=parsed, finish_reason="stop",
                  usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5), latency_ms=1.5)


def bad(cid: str) -> Result:
    return Result.failure(cid, "invalid_output", "not JSON", text="{oops")


def summary(**kw) -> Summary:
    base = dict(total=3, completed=2, failed=1, elapsed_s=1.0, items_per_s=3.0, prompt_tokens=9,
                completion_tokens=6, tokens_per_s=6.0)
    return Summary(**{**base, **kw})


async def test_begin_write_finish_and_read_back(store):
    job = make_job(3, metadata={"course": "4t ESO"}, model="m")
    await store.begin(job)
    rec = await store.get_job(job.id)
    assert (rec.status, rec.total, rec.model, rec.metadata) == (JobStatus.running, 3, "m", {"course": "4t ESO"})
    assert rec.started_at is not None and rec.finished_at is None
    await store.write(job.id, [ok("c0", parsed={"nota": 4, "feedback": "bé"}), bad("c1")])
    await store.write(job.id, [ok("c2")])
    await store.finish(job.id, JobStatus.completed, summary())
    rec = await store.get_job(job.id)
    assert (rec.status, rec.completed, rec.failed) == (JobStatus.completed, 2, 1)
    assert rec.finished_at is not None and rec.summary.completed == 2
    got = await store.results(job.id)
    assert [r.custom_id for r in got] == ["c0", "c1", "c2"]
    assert got[0] == ok("c0", parsed={"nota": 4, "feedback": "bé"})
    assert got[1] == bad("c1")


async def test_writing_a_chunk_twice_stores_and_counts_it_once(store):
    job = make_job(4)
    await store.begin(job)
    chunk = [ok("c0"), ok("c1"), bad("c2")]
    await store.write(job.id, chunk)
    await store.write(job.id, chunk)
    rec = await store.get_job(job.id)
    assert (rec.completed, rec.failed) == (2, 1)
    assert len(await store.results(job.id)) == 3


async def test_a_row_that_changes_status_moves_between_counters(store):
    job = make_job(2)
    await store.begin(job)
    await store.write(job.id, [bad("c0")])
    await store.write(job.id, [ok("c0")])
    rec = await store.get_job(job.id)
    assert (rec.completed, rec.failed) == (1, 0)
    assert (await store.done_ids(job.id)) == {"c0": ResultStatus.ok}


async def test_every_write_sends_every_column(store):
    # a rewrite without `parsed` must clear it, not keep the old value (PostgREST merge semantics)
    job = make_job(1)
    await store.begin(job)
    await store.write(job.id, [ok("c0", parsed={"a": 1})])
    await store.write(job.id, [ok("c0", text="again")])
    (r,) = await store.results(job.id)
    assert (r.text, r.parsed) == ("again", None)


async def test_done_ids_and_results_page_past_a_thousand_rows(store):
    job = Job(items=[], id="big")
    await store.begin(job)
    for start in range(0, 1500, 500):
        await store.write(job.id, [ok(f"r{i:05d}") for i in range(start, start + 500)])
    done = await store.done_ids(job.id)
    assert len(done) == 1500 and set(done.values()) == {ResultStatus.ok}
    page1 = await store.results(job.id, limit=1000)
    page2 = await store.results(job.id, after=page1[-1].custom_id, limit=1000)
    assert len(page1) == 1000 and len(page2) == 500
    assert page2[0].custom_id == "r01000"


async def test_begin_again_reopens_a_finished_job_and_keeps_its_results(store):
    job = make_job(2)
    await store.begin(job)
    await store.write(job.id, [ok("c0")])
    await store.finish(job.id, JobStatus.failed, summary(reason="engine died"))
    assert (await store.get_job(job.id)).error == "engine died"
    await store.begin(job)
    rec = await store.get_job(job.id)
    assert (rec.status, rec.error, rec.finished_at, rec.completed) == (JobStatus.running, None, None, 1)


async def test_unknown_job_reads_as_none(store):
    assert await store.get_job("nope") is None
    assert await store.done_ids("nope") == {}


async def test_accept_records_a_queued_job_once_and_never_touches_a_known_one(store):
    job = make_job(3, id="acc-1")
    assert await store.accept(job) is True
    record = await store.get_job("acc-1")
    assert record.status == JobStatus.queued and record.total == 3 and record.started_at is None
    assert await store.accept(make_job(5, id="acc-1")) is False  # idempotent on the id
    assert (await store.get_job("acc-1")).total == 3
    await store.begin(job)
    assert (await store.get_job("acc-1")).status == JobStatus.running
    assert await store.accept(job) is False
    assert (await store.get_job("acc-1")).status == JobStatus.running


async def test_list_jobs_newest_first_with_a_limit_and_a_status_filter(store):
    import asyncio

    assert await store.list_jobs() == []
    for name in ("lb", "lc", "la", "ld"):  # created in this order; the ids sort otherwise
        await store.accept(make_job(2, id=name, metadata={"n": name}))
        await asyncio.sleep(0.01)
    await store.begin(make_job(2, id="lc", metadata={"n": "lc"}))
    await store.finish("ld", JobStatus.completed, summary(total=2, completed=2, failed=0))
    listed = await store.list_jobs()
    assert [r.id for r in listed] == ["ld", "la", "lc", "lb"]
    assert [r.id for r in await store.list_jobs(limit=2)] == ["ld", "la"]
    assert [r.id for r in await store.list_jobs(status=JobStatus.queued)] == ["la", "lb"]
    assert [r.id for r in await store.list_jobs(status=JobStatus.queued, limit=1)] == ["la"]
    assert [r.id for r in await store.list_jobs(status=JobStatus.running)] == ["lc"]
    assert await store.list_jobs(status=JobStatus.failed) == []
    # the same records get_job gives, summary and metadata included
    for r in listed:
        assert r == await store.get_job(r.id)
    (done,) = await store.list_jobs(status=JobStatus.completed)
    assert done.summary.completed == 2 and done.metadata == {"n": "ld"}


async def test_list_jobs_breaks_ties_by_id(store):
    # jobs created in the same instant (one statement's clock) still come in a fixed order
    jobs = [make_job(1, id=f"t{i}") for i in range(3)]
    for job in jobs:
        await store.accept(job)
    listed = [r.id for r in await store.list_jobs()]
    created = {r.id: r.created_at for r in await store.list_jobs()}
    assert sorted(listed) == ["t0", "t1", "t2"]
    assert listed == sorted(listed, key=lambda i: (created[i], i), reverse=True)


async def test_dispatch_ref_is_kept_per_job_and_survives_the_job_s_life(store):
    # the platform's request id for a job (RunPod's /run id), so any API replica can cancel it
    assert await store.get_dispatch_ref("nope") is None
    await store.set_dispatch_ref("nope", "rp-0")  # an unknown job: nothing is created
    assert await store.get_job("nope") is None and await store.get_dispatch_ref("nope") is None
    job, other = make_job(2, id="ref-1"), make_job(1, id="ref-2")
    await store.accept(job)
    await store.accept(other)
    assert await store.get_dispatch_ref(job.id) is None
    await store.set_dispatch_ref(job.id, "rp-1")
    assert (await store.get_dispatch_ref(job.id), await store.get_dispatch_ref(other.id)) == ("rp-1", None)
    await store.begin(job)
    await store.write(job.id, [ok("c0")])
    await store.finish(job.id, JobStatus.failed, summary(reason="x"))
    assert await store.get_dispatch_ref(job.id) == "rp-1"
    await store.set_dispatch_ref(job.id, "rp-2")  # dispatched again: the newest request wins
    assert await store.get_dispatch_ref(job.id) == "rp-2"
    await store.set_dispatch_ref(job.id, None)
    assert await store.get_dispatch_ref(job.id) is None
    assert (await store.get_job(job.id)).completed == 1
