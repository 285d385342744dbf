"""The evaluation tables (issue 14; shared/stores/evals.py) on SQLite, Postgres and Supabase (supabase-py ->
PostgREST adapter -> real Postgres): suite versions kept once, runs and their history, case results written
once however often a run resumes, and schedule slots claimed by exactly one of many tickers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord, ScheduleRecord, SuiteRecord

V1, V2 = "0123456789abcdef", "fedcba9876543210"
CASES = [{"id": "c0", "prompt": "hola"}, {"id": "c1", "prompt": "adéu", "expected": "bye"}]


def suite(version: str = V1, n: int = 2) -> SuiteRecord:
    return SuiteRecord(id="abc:grading", name="grading", owner="alice", version=version, cases=n)


def run(run_id: str, **kw) -> RunRecord:
    return RunRecord(id=run_id, owner="alice", suite_id="abc:grading", version=V1, job_id=f"job-{run_id}", **kw)


def result(run_id: str, case_id: str, passed: bool = True) -> CaseResult:
    return CaseResult(run_id=run_id, case_id=case_id, passed=passed, score=float(passed),
                      outcomes=[{"type": "contains", "passed": passed, "reason": "à"}], label=3, output="sí")


async def test_a_version_is_kept_once_and_the_latest_is_named(store):
    assert await store.put_suite(suite(), {"id": "grading", "template": "{{ x }}"}, CASES)
    assert not await store.put_suite(suite(), {"id": "grading", "template": "{{ x }}"}, CASES)
    rec = await store.get_suite("abc:grading")
    assert (rec.name, rec.owner, rec.version, rec.cases) == ("grading", "alice", V1, 2)
    assert await store.put_suite(suite(V2, 1), {"id": "grading"}, CASES[:1])
    assert (await store.get_suite("abc:grading")).version == V2
    options, cases = await store.suite_version("abc:grading")
    assert options == {"id": "grading"} and cases == CASES[:1]
    options, cases = await store.suite_version("abc:grading", V1)
    assert options["template"] == "{{ x }}" and cases == CASES
    assert await store.suite_version("abc:grading", "0000000000000000") is None
    assert await store.get_suite("nope") is None


async def test_runs_are_created_once_listed_newest_first_and_finished(store):
    await store.put_suite(suite(), {}, CASES)
    assert await store.create_run(run("r1", model="m", settings={"temperature": 0.1}, git_rev="abc123"))
    assert not await store.create_run(run("r1"))
    for i in range(2, 6):
        await asyncio.sleep(0.002)
        await store.create_run(run(f"r{i}", baseline="r1"))
    got = await store.get_run("r1")
    assert (got.model, got.settings, got.git_rev, got.status) == ("m", {"temperature": 0.1}, "abc123",
                                                                 JobStatus.queued)
    page = await store.list_runs("abc:grading", limit=2)
    assert [r.id for r in page] == ["r5", "r4"]
    assert [r.id for r in await store.list_runs("abc:grading", limit=10, before="r4")] == ["r3", "r2", "r1"]
    await store.set_run_status("r2", JobStatus.running)
    assert (await store.get_run("r2")).status == JobStatus.running
    await store.finish_run("r2", JobStatus.completed, {"pass_rate": 0.5}, {"cases": ["c1"], "metrics": []})
    done = await store.get_run("r2")
    assert done.status == JobStatus.completed and done.scores == {"pass_rate": 0.5}
    assert done.regressions == {"cases": ["c1"], "metrics": []} and done.finished_at is not None
    assert await store.get_run("nope") is None


async def test_case_results_are_written_once_however_often_they_come(store):
    await store.put_suite(suite(), {}, CASES)
    await store.create_run(run("r1"))
    assert await store.write_case_results([result("r1", "c0"), result("r1", "c1", passed=False)]) == 2
    # a resumed run scores c1 again (and c2 for the first time): c1's first score stands
    assert await store.write_case_results([result("r1", "c1", passed=True), result("r1", "c2")]) == 1
    got = await store.case_results("r1")
    assert [(r.case_id, r.passed) for r in got] == [("c0", True), ("c1", False), ("c2", True)]
    assert got[0].outcomes == [{"type": "contains", "passed": True, "reason": "à"}] and got[0].label == 3
    assert [r.case_id for r in await store.case_results("r1", after="c0", limit=1)] == ["c1"]
    assert await store.scored_ids("r1") == {"c0", "c1", "c2"}
    assert await store.scored_ids("r1", ["c1", "c9"]) == {"c1"}
    assert await store.write_case_results([]) == 0


async def test_schedules_and_one_claim_per_slot(store):
    await store.put_suite(suite(), {}, CASES)
    await store.add_schedule(ScheduleRecord(id="nightly", owner="alice", suite_id="abc:grading", model="m",
                                            cron="0 3 * * *"))
    await store.add_schedule(ScheduleRecord(id="off", owner="bob", suite_id="abc:grading", cron="* * * * *",
                                            enabled=False))
    assert [s.id for s in await store.list_schedules()] == ["nightly", "off"]
    assert [s.id for s in await store.list_schedules(enabled_only=True)] == ["nightly"]
    assert [s.id for s in await store.list_schedules(owner="bob")] == ["off"]
    slot = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    claims = await asyncio.gather(*(store.claim_slot("nightly", slot, f"run-{i}") for i in range(3)))
    assert sorted(claims) == [False, False, True]
    assert (await store.get_schedule("nightly")).last_slot == slot
    assert await store.claim_slot("nightly", slot + timedelta(days=1), "run-next")
    assert not await store.claim_slot("nightly", slot, "late")  # an old slot stays claimed
    assert (await store.get_schedule("nightly")).last_slot == slot + timedelta(days=1)
    assert await store.remove_schedule("off") and not await store.remove_schedule("off")
    assert await store.get_schedule("off") is None
