"""The evaluation tables on SQLite (shared/stores/evals.py): a mixin of SQLiteStore, on its connection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord, ScheduleRecord, SuiteRecord
from shared.stores.base import id_batches
from shared.stores.evals import (
    CASE_COLUMNS,
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

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ')"

EVAL_SCHEMA = f"""
create table if not exists eval_suites (
  id text primary key, name text not null, owner text, version text not null, cases integer not null,
  created_at text not null default ({_NOW}), updated_at text not null default ({_NOW})
);
create table if not exists eval_suite_versions (
  suite_id text not null references eval_suites (id) on delete cascade, version text not null,
  options text not null, cases integer not null, created_at text not null default ({_NOW}),
  primary key (suite_id, version)
);
create table if not exists eval_cases (
  suite_id text not null, version text not null, idx integer not null, case_id text not null, body text not null,
  primary key (suite_id, version, idx),
  foreign key (suite_id, version) references eval_suite_versions (suite_id, version) on delete cascade
);
create unique index if not exists eval_cases_case_id_idx on eval_cases (suite_id, version, case_id);
create table if not exists eval_runs (
  id text primary key, owner text, suite_id text not null references eval_suites (id) on delete cascade,
  version text not null, job_id text not null, model text, adapter text, settings text not null default '{{}}',
  git_rev text, baseline text, schedule_id text, slot text, status text not null default 'queued',
  scores text, regressions text, created_at text not null default ({_NOW}), finished_at text
);
create index if not exists eval_runs_suite_created_idx on eval_runs (suite_id, created_at desc, id desc);
create table if not exists eval_case_results (
  run_id text not null references eval_runs (id) on delete cascade, case_id text not null,
  passed integer not null, score real not null, outcomes text not null, label real, expected_label real,
  output text, error text, created_at text not null default ({_NOW}),
  primary key (run_id, case_id)
);
create table if not exists eval_schedules (
  id text primary key, owner text, suite_id text not null references eval_suites (id) on delete cascade,
  model text, cron text not null, enabled integer not null default 1,
  created_at text not null default ({_NOW}), last_slot text
);
create table if not exists eval_schedule_slots (
  schedule_id text not null references eval_schedules (id) on delete cascade, slot text not null,
  run_id text not null, claimed_at text not null default ({_NOW}),
  primary key (schedule_id, slot)
);
"""

_JSON_COLUMNS = {"settings", "scores", "regressions", "outcomes", "options", "body"}


def _iso(dt: datetime) -> str:
    """One text form for times (SQLite compares them as text): UTC, microseconds, Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _values(row: dict[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    out = []
    for c in columns:
        v = row.get(c)
        if c in _JSON_COLUMNS and v is not None:
            v = json.dumps(v, ensure_ascii=False)
        elif c in ("slot", "last_slot", "finished_at") and isinstance(v, str):
            v = _iso(datetime.fromisoformat(v))
        out.append(v)
    return tuple(out)


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"insert into {table} ({', '.join(columns)}) values ({', '.join('?' * len(columns))})"


class SQLiteEvals:
    """`EvalStore` for SQLiteStore: needs its `_run`."""

    _run: Any

    async def put_suite(self, rec: SuiteRecord, options: dict[str, Any], cases: Sequence[dict[str, Any]]) -> bool:
        await self._run("insert into eval_suites (id, name, owner, version, cases) values (?, ?, ?, ?, ?) "
                        f"on conflict (id) do update set name = excluded.name, version = excluded.version, "
                        f"cases = excluded.cases, updated_at = {_NOW}",
                        (rec.id, rec.name, rec.owner, rec.version, rec.cases))
        new = bool(await self._run("insert into eval_suite_versions (suite_id, version, options, cases) "
                                   "values (?, ?, ?, ?) on conflict do nothing returning version",
                                   (rec.id, rec.version, json.dumps(options, ensure_ascii=False), len(cases)),
                                   fetch=True))
        have = (await self._run("select count(*) as n from eval_cases where suite_id = ? and version = ?",
                                (rec.id, rec.version), fetch=True))[0]["n"]
        if have < len(cases):  # a new version, or one whose cases were cut short
            rows = [_values(r, CASE_COLUMNS) for r in case_rows(rec.id, rec.version, cases)]
            await self._run(_insert("eval_cases", CASE_COLUMNS) + " on conflict do nothing", rows, many=True)
        return new

    async def get_suite(self, suite_id: str) -> SuiteRecord | None:
        rows = await self._run("select * from eval_suites where id = ?", (suite_id,), fetch=True)
        return row_suite(dict(rows[0])) if rows else None

    async def suite_version(self, suite_id: str, version: str | None = None
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        rows = await self._run("select v.version, v.options from eval_suite_versions v join eval_suites s "
                               "on s.id = v.suite_id where v.suite_id = ? and v.version = coalesce(?, s.version)",
                               (suite_id, version), fetch=True)
        if not rows:
            return None
        cases = await self._run("select body from eval_cases where suite_id = ? and version = ? order by idx",
                                (suite_id, rows[0]["version"]), fetch=True)
        return json.loads(rows[0]["options"]), [json.loads(c["body"]) for c in cases]

    async def create_run(self, rec: RunRecord) -> bool:
        return bool(await self._run(_insert("eval_runs", RUN_COLUMNS) + " on conflict do nothing returning id",
                                    _values(run_row(rec), RUN_COLUMNS), fetch=True))

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._run("select * from eval_runs where id = ?", (run_id,), fetch=True)
        return row_run(dict(rows[0])) if rows else None

    async def list_runs(self, suite_id: str, *, limit: int = 50, before: str | None = None) -> list[RunRecord]:
        rows = await self._run(
            "select * from eval_runs where suite_id = :s and (:b is null or (created_at, id) < "
            "(select created_at, id from eval_runs where id = :b and suite_id = :s)) "
            "order by created_at desc, id desc limit :n", {"s": suite_id, "b": before, "n": limit}, fetch=True)
        return [row_run(dict(r)) for r in rows]

    async def set_run_status(self, run_id: str, status: JobStatus) -> None:
        await self._run("update eval_runs set status = ? where id = ?", (status.value, run_id))

    async def finish_run(self, run_id: str, status: JobStatus, scores: dict[str, Any] | None,
                         regressions: dict[str, Any] | None) -> None:
        await self._run(f"update eval_runs set status = ?, scores = ?, regressions = ?, finished_at = {_NOW} "
                        "where id = ?", (status.value, *_values({"scores": scores, "regressions": regressions},
                                                                ("scores", "regressions")), run_id))

    async def write_case_results(self, rows: Sequence[CaseResult]) -> int:
        if not rows:
            return 0
        values = [_values(case_result_row(r), CASE_RESULT_COLUMNS) for r in rows]
        return int(await self._run(_insert("eval_case_results", CASE_RESULT_COLUMNS) + " on conflict do nothing",
                                   values, many=True))

    async def case_results(self, run_id: str, *, after: str | None = None, limit: int = 1000) -> list[CaseResult]:
        rows = await self._run("select * from eval_case_results where run_id = ? and case_id > ? order by case_id "
                               "limit ?", (run_id, after or "", limit), fetch=True)
        return [row_case_result(dict(r)) for r in rows]

    async def scored_ids(self, run_id: str, case_ids: Sequence[str] | None = None) -> set[str]:
        if case_ids is None:
            rows = await self._run("select case_id from eval_case_results where run_id = ?", (run_id,), fetch=True)
            return {r["case_id"] for r in rows}
        found: set[str] = set()
        for batch in id_batches(case_ids, most=500):
            rows = await self._run("select case_id from eval_case_results where run_id = ? and case_id in "
                                   f"({', '.join('?' * len(batch))})", (run_id, *batch), fetch=True)
            found |= {r["case_id"] for r in rows}
        return found

    async def add_schedule(self, rec: ScheduleRecord) -> None:
        await self._run(_insert("eval_schedules", SCHEDULE_COLUMNS), _values(schedule_row(rec), SCHEDULE_COLUMNS))

    async def list_schedules(self, *, owner: str | None = None, enabled_only: bool = False) -> list[ScheduleRecord]:
        rows = await self._run("select * from eval_schedules where (:o is null or owner = :o) and (not :e or enabled) "
                               "order by id", {"o": owner, "e": enabled_only}, fetch=True)
        return [row_schedule(dict(r)) for r in rows]

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        rows = await self._run("select * from eval_schedules where id = ?", (schedule_id,), fetch=True)
        return row_schedule(dict(rows[0])) if rows else None

    async def remove_schedule(self, schedule_id: str) -> bool:
        return bool(await self._run("delete from eval_schedules where id = ? returning id", (schedule_id,),
                                    fetch=True))

    async def claim_slot(self, schedule_id: str, slot: datetime, run_id: str) -> bool:
        at = _iso(slot)
        won = bool(await self._run("insert into eval_schedule_slots (schedule_id, slot, run_id) values (?, ?, ?) "
                                   "on conflict do nothing returning slot", (schedule_id, at, run_id), fetch=True))
        if won:
            await self._run("update eval_schedules set last_slot = ? where id = ? and "
                            "(last_slot is null or last_slot < ?)", (at, schedule_id, at))
        return won
