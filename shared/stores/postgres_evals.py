"""The evaluation tables on Postgres (shared/stores/evals.py): a mixin of PostgresStore, on its pool."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord, ScheduleRecord, SuiteRecord
from shared.stores.evals import (
    CASE_RESULT_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    case_result_row,
    case_rows,
    row_case_result,
    row_run,
    row_schedule,
    row_suite,
    run_row,
    schedule_row,
)


def _recordset(table: str, columns: Sequence[str], types: str) -> str:
    """An insert of the rows of one JSON array parameter (one round trip however many rows)."""
    cols = ", ".join(columns)
    return f"insert into {table} ({cols}) select {cols} from jsonb_to_recordset(%s::jsonb) as r({types})"


_CASES = _recordset("eval_cases", ("suite_id", "version", "idx", "case_id", "body"),
                    "suite_id text, version text, idx int, case_id text, body jsonb") + " on conflict do nothing"
_CASE_RESULTS = _recordset(
    "eval_case_results", CASE_RESULT_COLUMNS, "run_id text, case_id text, passed boolean, score float8, "
    "outcomes jsonb, label float8, expected_label float8, output text, error text") + " on conflict do nothing"
_JSONB = {"settings", "scores", "regressions"}


class PostgresEvals:
    """`EvalStore` for PostgresStore: needs its `_cursor`."""

    _cursor: Any

    async def put_suite(self, rec: SuiteRecord, options: dict[str, Any], cases: Sequence[dict[str, Any]]) -> bool:
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute("insert into eval_suites (id, name, owner, version, cases) values (%s, %s, %s, %s, %s) "
                              "on conflict (id) do update set name = excluded.name, version = excluded.version, "
                              "cases = excluded.cases, updated_at = now()",
                              (rec.id, rec.name, rec.owner, rec.version, rec.cases))
            await cur.execute("insert into eval_suite_versions (suite_id, version, options, cases) "
                              "values (%s, %s, %s, %s) on conflict do nothing returning version",
                              (rec.id, rec.version, Jsonb(options), len(cases)))
            new = await cur.fetchone() is not None
            if new:  # in the same transaction as the version: its cases are there whenever it is
                await cur.execute(_CASES, (json.dumps(case_rows(rec.id, rec.version, cases), ensure_ascii=False),))
        return new

    async def get_suite(self, suite_id: str) -> SuiteRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from eval_suites where id = %s", (suite_id,))
            row = await cur.fetchone()
        return row_suite(row) if row else None

    async def suite_version(self, suite_id: str, version: str | None = None
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        async with self._cursor() as cur:
            await cur.execute("select v.version, v.options from eval_suite_versions v join eval_suites s "
                              "on s.id = v.suite_id where v.suite_id = %s and v.version = coalesce(%s, s.version)",
                              (suite_id, version))
            row = await cur.fetchone()
            if row is None:
                return None
            await cur.execute("select body from eval_cases where suite_id = %s and version = %s order by idx",
                              (suite_id, row["version"]))
            cases = [c["body"] for c in await cur.fetchall()]
        return row["options"], cases

    async def create_run(self, rec: RunRecord) -> bool:
        row = run_row(rec)
        values = [Jsonb(row[c]) if c in _JSONB and row[c] is not None else row[c] for c in RUN_COLUMNS]
        async with self._cursor() as cur:
            await cur.execute(f"insert into eval_runs ({', '.join(RUN_COLUMNS)}) values "
                              f"({', '.join(['%s'] * len(RUN_COLUMNS))}) on conflict do nothing returning id", values)
            return await cur.fetchone() is not None

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from eval_runs where id = %s", (run_id,))
            row = await cur.fetchone()
        return row_run(row) if row else None

    async def list_runs(self, suite_id: str, *, limit: int = 50, before: str | None = None) -> list[RunRecord]:
        async with self._cursor() as cur:
            await cur.execute("select * from eval_runs where suite_id = %(s)s and (%(b)s::text is null or "
                              "(created_at, id) < (select created_at, id from eval_runs where id = %(b)s "
                              "and suite_id = %(s)s)) order by created_at desc, id desc limit %(n)s",
                              {"s": suite_id, "b": before, "n": limit})
            return [row_run(r) for r in await cur.fetchall()]

    async def set_run_status(self, run_id: str, status: JobStatus) -> None:
        async with self._cursor() as cur:
            await cur.execute("update eval_runs set status = %s where id = %s", (status.value, run_id))

    async def finish_run(self, run_id: str, status: JobStatus, scores: dict[str, Any] | None,
                         regressions: dict[str, Any] | None) -> None:
        async with self._cursor() as cur:
            await cur.execute("update eval_runs set status = %s, scores = %s, regressions = %s, finished_at = now() "
                              "where id = %s", (status.value, scores and Jsonb(scores),
                                                regressions and Jsonb(regressions), run_id))

    async def write_case_results(self, rows: Sequence[CaseResult]) -> int:
        if not rows:
            return 0
        async with self._cursor() as cur:
            await cur.execute(_CASE_RESULTS, (json.dumps([case_result_row(r) for r in rows], ensure_ascii=False),))
            return cur.rowcount

    async def case_results(self, run_id: str, *, after: str | None = None, limit: int = 1000) -> list[CaseResult]:
        async with self._cursor() as cur:
            await cur.execute('select * from eval_case_results where run_id = %s and case_id > %s '
                              'order by case_id collate "C" limit %s', (run_id, after or "", limit))
            return [row_case_result(r) for r in await cur.fetchall()]

    async def scored_ids(self, run_id: str, case_ids: Sequence[str] | None = None) -> set[str]:
        async with self._cursor() as cur:
            await cur.execute("select case_id from eval_case_results where run_id = %s and "
                              "(%s::text[] is null or case_id = any(%s::text[]))",
                              (run_id, None if case_ids is None else list(case_ids),
                               None if case_ids is None else list(case_ids)))
            return {r["case_id"] for r in await cur.fetchall()}

    async def add_schedule(self, rec: ScheduleRecord) -> None:
        row = schedule_row(rec)
        async with self._cursor() as cur:
            await cur.execute(f"insert into eval_schedules ({', '.join(SCHEDULE_COLUMNS)}) values "
                              f"({', '.join(['%s'] * len(SCHEDULE_COLUMNS))})", [row[c] for c in SCHEDULE_COLUMNS])

    async def list_schedules(self, *, owner: str | None = None, enabled_only: bool = False) -> list[ScheduleRecord]:
        async with self._cursor() as cur:
            await cur.execute("select * from eval_schedules where (%(o)s::text is null or owner = %(o)s) and "
                              "(not %(e)s or enabled) order by id", {"o": owner, "e": enabled_only})
            return [row_schedule(r) for r in await cur.fetchall()]

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from eval_schedules where id = %s", (schedule_id,))
            row = await cur.fetchone()
        return row_schedule(row) if row else None

    async def remove_schedule(self, schedule_id: str) -> bool:
        async with self._cursor() as cur:
            await cur.execute("delete from eval_schedules where id = %s returning id", (schedule_id,))
            return await cur.fetchone() is not None

    async def claim_slot(self, schedule_id: str, slot: datetime, run_id: str) -> bool:
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute("insert into eval_schedule_slots (schedule_id, slot, run_id) values (%s, %s, %s) "
                              "on conflict do nothing returning slot", (schedule_id, slot, run_id))
            won = await cur.fetchone() is not None
            if won:
                await cur.execute("update eval_schedules set last_slot = %s where id = %s and "
                                  "(last_slot is null or last_slot < %s)", (slot, schedule_id, slot))
        return won
