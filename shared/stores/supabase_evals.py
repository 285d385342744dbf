"""The evaluation tables (shared/stores/evals.py) on Supabase: `SupabaseStore`'s share of `EvalStore`.

- Inserts that must happen once (a suite version, a run, a case result, a schedule slot) are upserts
  that ignore duplicates; the rows returned (or counted) say whether this request added them.
- PostgREST runs no transaction across requests: a version's row goes in before its cases (the
  foreign key), so a `put_suite` cut off between them leaves the cases short; the next `put_suite`
  of that version sees its last case missing and inserts them again (ignoring those there).
- Reads go a page (`_PAGE` rows) at a time, by keyset; id lists go as bounded `in.(...)` filters.
- shared/stores/supabase.py imports this module: its helpers are imported here when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from postgrest.types import CountMethod, ReturnMethod

from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord, ScheduleRecord, SuiteRecord
from shared.stores.base import id_batches
from shared.stores.evals import (
    case_result_row,
    case_rows,
    row_case_result,
    row_run,
    row_schedule,
    row_suite,
    run_row,
    schedule_row,
)


def _iso(at: datetime) -> str:
    """`at` as PostgREST takes a timestamptz (a naive time is UTC)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


class SupabaseEvals:
    """The `EvalStore` methods; the class it is mixed into gives `_mapped`."""

    async def _pages(self, what: str, table: str, key: str, after: Any, where: Callable[[Any], Any],
                     columns: str = "*", limit: int | None = None) -> list[dict]:
        """Rows of `table` (filtered by `where`) with `key` > `after`, in `key` order, up to `limit` (None: all)."""
        from shared.stores.supabase import _PAGE

        rows: list[dict] = []
        async with self._mapped(what) as db:
            while limit is None or len(rows) < limit:
                want = _PAGE if limit is None else min(_PAGE, limit - len(rows))
                page = (await where(db.table(table).select(columns)).gt(key, after).order(key).limit(want)
                        .execute()).data
                rows.extend(page)
                if len(page) < want:
                    break
                after = page[-1][key]
        return rows

    async def _insert_batches(self, what: str, table: str, on_conflict: str, rows: list[dict]) -> int:
        """Insert `rows` in requests under STAGE_BYTES, ignoring duplicates on `on_conflict`; how many were added."""
        from shared.stores.supabase import STAGE_BYTES, _batches

        added = 0
        async with self._mapped(what) as db:
            for batch in _batches(rows, STAGE_BYTES):
                done = await db.table(table).upsert(
                    batch, on_conflict=on_conflict, ignore_duplicates=True, returning=ReturnMethod.minimal,
                    count=CountMethod.exact).execute()
                added += done.count or 0
        return added

    # ## Suites

    async def put_suite(self, rec: SuiteRecord, options: dict[str, Any], cases: Sequence[dict[str, Any]]) -> bool:
        from shared.stores.supabase import _now

        async with self._mapped("put_suite") as db:
            await db.table("eval_suites").upsert(
                {"id": rec.id, "name": rec.name, "owner": rec.owner, "version": rec.version, "cases": rec.cases,
                 "updated_at": _now()}, on_conflict="id", returning=ReturnMethod.minimal).execute()
            new = bool((await db.table("eval_suite_versions").upsert(
                {"suite_id": rec.id, "version": rec.version, "options": options, "cases": len(cases)},
                on_conflict="suite_id,version", ignore_duplicates=True,
                returning=ReturnMethod.representation).execute()).data)
            # batches go in idx order, each one statement: the last case there means all are
            missing = bool(cases) and (new or not (await db.table("eval_cases").select("idx").eq("suite_id", rec.id)
                                                   .eq("version", rec.version).eq("idx", len(cases) - 1).limit(1)
                                                   .execute()).data)
        if missing:
            await self._insert_batches("put_suite cases", "eval_cases", "suite_id,version,idx",
                                       case_rows(rec.id, rec.version, cases))
        return new

    async def get_suite(self, suite_id: str) -> SuiteRecord | None:
        async with self._mapped("get_suite") as db:
            rows = (await db.table("eval_suites").select("*").eq("id", suite_id).limit(1).execute()).data
        return row_suite(rows[0]) if rows else None

    async def suite_version(self, suite_id: str, version: str | None = None
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        async with self._mapped("suite_version") as db:
            if version is None:
                found = (await db.table("eval_suites").select("version").eq("id", suite_id).limit(1).execute()).data
                if not found:
                    return None
                version = found[0]["version"]
            rows = (await db.table("eval_suite_versions").select("options").eq("suite_id", suite_id)
                    .eq("version", version).limit(1).execute()).data
        if not rows:
            return None
        cases = await self._pages("suite_version cases", "eval_cases", "idx", -1,
                                  lambda q: q.eq("suite_id", suite_id).eq("version", version), "idx,body")
        return rows[0]["options"], [c["body"] for c in cases]

    # ## Runs

    async def create_run(self, rec: RunRecord) -> bool:
        async with self._mapped("create_run") as db:
            rows = (await db.table("eval_runs").upsert(run_row(rec), on_conflict="id", ignore_duplicates=True,
                                                       returning=ReturnMethod.representation).execute()).data
        return bool(rows)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._mapped("get_run") as db:
            rows = (await db.table("eval_runs").select("*").eq("id", run_id).limit(1).execute()).data
        return row_run(rows[0]) if rows else None

    async def list_runs(self, suite_id: str, *, limit: int = 50, before: str | None = None) -> list[RunRecord]:
        async with self._mapped("list_runs") as db:
            def query() -> Any:
                return db.table("eval_runs").select("*").eq("suite_id", suite_id)

            if before is None:
                rows = (await query().order("created_at", desc=True).order("id", desc=True).limit(limit)
                        .execute()).data
                return [row_run(r) for r in rows]
            # keyset before (created_at, id) of the run `before`, as list_jobs: its ties by id, then older ones
            found = (await db.table("eval_runs").select("created_at").eq("suite_id", suite_id).eq("id", before)
                     .limit(1).execute()).data
            if not found:
                return []
            at = found[0]["created_at"]
            rows = (await query().eq("created_at", at).lt("id", before).order("id", desc=True).limit(limit)
                    .execute()).data
            if len(rows) < limit:
                rows += (await query().lt("created_at", at).order("created_at", desc=True).order("id", desc=True)
                         .limit(limit - len(rows)).execute()).data
        return [row_run(r) for r in rows]

    async def set_run_status(self, run_id: str, status: JobStatus) -> None:
        async with self._mapped("set_run_status") as db:
            await db.table("eval_runs").update({"status": status.value}, returning=ReturnMethod.minimal) \
                .eq("id", run_id).execute()

    async def finish_run(self, run_id: str, status: JobStatus, scores: dict[str, Any] | None,
                         regressions: dict[str, Any] | None) -> None:
        from shared.stores.supabase import _now

        async with self._mapped("finish_run") as db:
            await db.table("eval_runs").update(
                {"status": status.value, "scores": scores, "regressions": regressions, "finished_at": _now()},
                returning=ReturnMethod.minimal).eq("id", run_id).execute()

    # ## Case results

    async def write_case_results(self, rows: Sequence[CaseResult]) -> int:
        if not rows:
            return 0
        docs = sorted((case_result_row(r) for r in rows), key=lambda d: (d["run_id"], d["case_id"]))  # lock order
        return await self._insert_batches("write_case_results", "eval_case_results", "run_id,case_id", docs)

    async def case_results(self, run_id: str, *, after: str | None = None, limit: int = 1000) -> list[CaseResult]:
        rows = await self._pages("case_results", "eval_case_results", "case_id", after or "",
                                 lambda q: q.eq("run_id", run_id), limit=limit)
        return [row_case_result(r) for r in rows]

    async def scored_ids(self, run_id: str, case_ids: Sequence[str] | None = None) -> set[str]:
        from shared.stores.supabase import URL_ID_BYTES, URL_IDS

        if case_ids is None:
            rows = await self._pages("scored_ids", "eval_case_results", "case_id", "",
                                     lambda q: q.eq("run_id", run_id), "case_id")
            return {r["case_id"] for r in rows}
        found: set[str] = set()
        async with self._mapped("scored_ids") as db:
            for batch in id_batches(case_ids, most=URL_IDS, url_bytes=URL_ID_BYTES):
                rows = (await db.table("eval_case_results").select("case_id").eq("run_id", run_id)
                        .in_("case_id", batch).execute()).data  # at most URL_IDS rows: one page
                found.update(r["case_id"] for r in rows)
        return found

    # ## Schedules

    async def add_schedule(self, rec: ScheduleRecord) -> None:
        async with self._mapped("add_schedule") as db:
            await db.table("eval_schedules").insert(schedule_row(rec), returning=ReturnMethod.minimal).execute()

    async def list_schedules(self, *, owner: str | None = None, enabled_only: bool = False) -> list[ScheduleRecord]:
        def where(q: Any) -> Any:
            if owner is not None:
                q = q.eq("owner", owner)
            return q.eq("enabled", True) if enabled_only else q

        return [row_schedule(r) for r in await self._pages("list_schedules", "eval_schedules", "id", "", where)]

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        async with self._mapped("get_schedule") as db:
            rows = (await db.table("eval_schedules").select("*").eq("id", schedule_id).limit(1).execute()).data
        return row_schedule(rows[0]) if rows else None

    async def remove_schedule(self, schedule_id: str) -> bool:
        async with self._mapped("remove_schedule") as db:
            rows = (await db.table("eval_schedules").delete(returning=ReturnMethod.representation)
                    .eq("id", schedule_id).execute()).data
        return bool(rows)

    async def claim_slot(self, schedule_id: str, slot: datetime, run_id: str) -> bool:
        at = _iso(slot)
        async with self._mapped("claim_slot") as db:
            claimed = bool((await db.table("eval_schedule_slots").upsert(
                {"schedule_id": schedule_id, "slot": at, "run_id": run_id}, on_conflict="schedule_id,slot",
                ignore_duplicates=True, returning=ReturnMethod.representation).execute()).data)
            if claimed:  # last_slot only moves on; two plain filters (null, or older) rather than one `or=`
                for move in (lambda q: q.is_("last_slot", "null"), lambda q: q.lt("last_slot", at)):
                    await move(db.table("eval_schedules").update({"last_slot": at}, returning=ReturnMethod.minimal)
                               .eq("id", schedule_id)).execute()
        return claimed
