"""What the Supabase store sends over the wire, through the real supabase-py client, and how
PostgREST's answers map into our errors."""

from __future__ import annotations

import pytest

from shared.contracts.errors import StoreError, StoreUnavailable
from shared.contracts.models import Result, ResultStatus
from shared.stores.base import RESULT_COLUMNS
from shared.stores.supabase import SupabaseStore
from testkit.postgrest import PostgrestTransport
from tests.conftest import SERVICE_KEY, make_job


@pytest.fixture
def sb(pg, postgrest):
    pg.truncate()
    return SupabaseStore("http://supabase.test/", SERVICE_KEY, transport=postgrest, timeout_s=5)


async def test_a_chunk_is_one_merge_upsert_with_every_column(sb, postgrest):
    job = make_job(3)
    await sb.begin(job)
    postgrest.log.clear()
    rows = [Result(custom_id="c0", status=ResultStatus.ok, text="x"), Result.failure("c1", "timeout", "slow")]
    await sb.write(job.id, rows)
    (req,) = postgrest.log
    assert (req.method, req.path) == ("POST", "/rest/v1/job_results")
    assert req.params["on_conflict"] == "job_id,custom_id"
    assert {c.strip('"') for c in req.params["columns"].split(",")} == set(RESULT_COLUMNS)
    prefer = {p.strip() for p in req.headers["prefer"].split(",")}
    assert {"resolution=merge-duplicates", "return=minimal"} <= prefer
    assert "missing=default" not in prefer
    assert all(set(row) == set(RESULT_COLUMNS) for row in req.body)
    assert req.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    await sb.close()


async def test_a_chunk_s_rows_go_in_custom_id_order(sb, postgrest):
    # two writers of one job then lock shared rows in the same order: no deadlocks (issue 11, finding 7)
    job = make_job(0)
    await sb.begin(job)
    postgrest.log.clear()
    await sb.write(job.id, [Result(custom_id=c, status=ResultStatus.ok) for c in ("c2", "c10", "a", "c1", "B")])
    (req,) = postgrest.log
    assert [row["custom_id"] for row in req.body] == ["B", "a", "c1", "c10", "c2"]
    await sb.close()


async def test_finish_is_a_patch_on_the_job_row(sb, postgrest):
    from shared.contracts.models import JobStatus, Summary

    job = make_job(1)
    await sb.begin(job)
    postgrest.log.clear()
    await sb.finish(job.id, JobStatus.completed, Summary(total=1, completed=1, failed=0, elapsed_s=1, items_per_s=1,
                                                         prompt_tokens=1, completion_tokens=1, tokens_per_s=1))
    (req,) = postgrest.log
    assert (req.method, req.path, req.params) == ("PATCH", "/rest/v1/jobs", {"id": f"eq.{job.id}"})
    assert set(req.body) == {"status", "finished_at", "summary", "error"}
    await sb.close()


async def test_a_wrong_key_is_a_store_error_not_retried_and_the_key_is_not_shown(pg, postgrest):
    wrong = SERVICE_KEY[:-4] + "AAAA"
    store = SupabaseStore("http://supabase.test", wrong, transport=postgrest, timeout_s=5)
    with pytest.raises(StoreError) as e:
        await store.get_job("x")
    assert not isinstance(e.value, StoreUnavailable)
    assert "PGRST301" in str(e.value) and wrong not in str(e.value) and wrong not in repr(store)
    await store.close()


async def test_an_unreachable_database_is_store_unavailable():
    transport = PostgrestTransport("postgresql://postgres@127.0.0.1:1/none", SERVICE_KEY)
    store = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=5)
    with pytest.raises(StoreUnavailable, match="PGRST001"):
        await store.write("j", [Result(custom_id="a", status=ResultStatus.ok)])
    await store.close()
    await transport.aclose()


async def test_a_constraint_violation_is_a_store_error(sb):
    # no jobs row: the foreign key refuses the result
    with pytest.raises(StoreError, match="23503") as e:
        await sb.write("missing-job", [Result(custom_id="a", status=ResultStatus.ok)])
    assert not isinstance(e.value, StoreUnavailable)
    await sb.close()
