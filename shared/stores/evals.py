"""The store's evaluation tables (supabase/migrations/*_evals.sql; shared/evals/records.py): the
`EvalStore` protocol every backend keeps, beside `Store`, and the rows they write.

- `put_suite` keeps a suite's version once: the same content hash again changes nothing but the
  suite's `updated_at`; a new one becomes the latest. Cases are kept per version, in order.
- `create_run` is idempotent on the run's id; `write_case_results` inserts and ignores repeats on
  (run_id, case_id), and says how many it added: a resumed run never scores a case twice.
- `claim_slot` inserts (schedule_id, slot) and says whether this caller made it: the one that did
  makes the run. Every ticker may try; one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord, ScheduleRecord, SuiteRecord
from shared.stores.base import _json


class EvalStore(Protocol):
    async def put_suite(self, rec: SuiteRecord, options: dict[str, Any], cases: Sequence[dict[str, Any]]) -> bool:
        """Keep `rec.version` of the suite (its options without cases, and its cases in order); True when
        that version is new. The suite's row then names it as the latest."""

    async def get_suite(self, suite_id: str) -> SuiteRecord | None: ...

    async def suite_version(self, suite_id: str, version: str | None = None
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(options, cases) of a version (default: the latest), or None."""

    async def create_run(self, rec: RunRecord) -> bool:
        """True when the run is new (its id was not there)."""

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(self, suite_id: str, *, limit: int = 50, before: str | None = None) -> list[RunRecord]:
        """The suite's runs, newest first; `before`: the runs older than that run (keyset on created_at, id)."""

    async def set_run_status(self, run_id: str, status: JobStatus) -> None: ...

    async def finish_run(self, run_id: str, status: JobStatus, scores: dict[str, Any] | None,
                         regressions: dict[str, Any] | None) -> None: ...

    async def write_case_results(self, rows: Sequence[CaseResult]) -> int:
        """Insert them, ignoring any (run_id, case_id) already there; how many were added."""

    async def case_results(self, run_id: str, *, after: str | None = None, limit: int = 1000) -> list[CaseResult]:
        """In case_id order, after `after`."""

    async def scored_ids(self, run_id: str, case_ids: Sequence[str] | None = None) -> set[str]: ...

    async def add_schedule(self, rec: ScheduleRecord) -> None: ...

    async def list_schedules(self, *, owner: str | None = None, enabled_only: bool = False) -> list[ScheduleRecord]:
        ...

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None: ...

    async def remove_schedule(self, schedule_id: str) -> bool: ...

    async def claim_slot(self, schedule_id: str, slot: datetime, run_id: str) -> bool:
        """True for the one caller that claims the slot (and moves the schedule's `last_slot` on)."""


#: the columns of eval_runs a store writes (created_at is the database's)
RUN_COLUMNS = ("id", "owner", "suite_id", "version", "job_id", "model", "adapter", "settings", "git_rev",
               "baseline", "schedule_id", "slot", "status", "scores", "regressions", "finished_at")
CASE_RESULT_COLUMNS = ("run_id", "case_id", "passed", "score", "outcomes", "label", "expected_label", "output",
                       "error")
SCHEDULE_COLUMNS = ("id", "owner", "suite_id", "model", "cron", "enabled", "last_slot")
#: the case columns of eval_cases
CASE_COLUMNS = ("suite_id", "version", "idx", "case_id", "body")


def run_row(rec: RunRecord) -> dict[str, Any]:
    row = rec.model_dump(mode="json", include=set(RUN_COLUMNS))
    return {c: row.get(c) for c in RUN_COLUMNS}


def row_run(row: dict[str, Any]) -> RunRecord:
    row = dict(row)
    for k in ("settings", "scores", "regressions"):
        row[k] = _json(row.get(k))
    row["settings"] = row["settings"] or {}
    return RunRecord.model_validate({k: v for k, v in row.items() if k in RunRecord.model_fields})


def case_result_row(r: CaseResult) -> dict[str, Any]:
    return r.model_dump(mode="json")


def row_case_result(row: dict[str, Any]) -> CaseResult:
    row = dict(row)
    row["outcomes"] = _json(row["outcomes"])
    row["passed"] = bool(row["passed"])
    return CaseResult.model_validate({k: v for k, v in row.items() if k in CaseResult.model_fields})


def schedule_row(rec: ScheduleRecord) -> dict[str, Any]:
    row = rec.model_dump(mode="json", include=set(SCHEDULE_COLUMNS))
    return {c: row.get(c) for c in SCHEDULE_COLUMNS}


def row_schedule(row: dict[str, Any]) -> ScheduleRecord:
    row = dict(row)
    row["enabled"] = bool(row["enabled"])
    return ScheduleRecord.model_validate({k: v for k, v in row.items() if k in ScheduleRecord.model_fields})


def row_suite(row: dict[str, Any]) -> SuiteRecord:
    return SuiteRecord.model_validate({k: v for k, v in dict(row).items() if k in SuiteRecord.model_fields})


def case_rows(suite_id: str, version: str, cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"suite_id": suite_id, "version": version, "idx": i, "case_id": str(c["id"]), "body": c}
            for i, c in enumerate(cases)]
