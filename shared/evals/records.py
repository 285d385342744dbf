"""What the store keeps of evaluation (supabase/migrations/*_evals.sql; shared/stores/evals.py).

- a suite, by its stored id (owner-scoped, as a job's: shared/contracts/owners.py), with the
  content-hashed versions it has had and each version's cases;
- a run: one version of a suite run once, as an ordinary llm-jobs job (`job_id`), with the model,
  adapter, settings and git revision it ran with, its scores and its regressions at the end;
- a case result per (run, case): written once, however often the run is resumed;
- a schedule: a suite, a model and a cron expression; each due slot is claimed once.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.contracts.models import ID_PATTERN, JobStatus


class SuiteRecord(BaseModel):
    #: the stored id (the owner's prefix and the suite's own id)
    id: str
    #: the suite's own id, as written in the file
    name: str
    owner: str | None = None
    #: the latest version's content hash
    version: str
    cases: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RunRecord(BaseModel):
    id: str = Field(pattern=ID_PATTERN)
    owner: str | None = None
    suite_id: str
    version: str
    #: the llm-jobs job that runs the cases
    job_id: str
    model: str | None = None
    adapter: str | None = None
    #: sampling and the other options the run was made with
    settings: dict[str, Any] = Field(default_factory=dict)
    #: the git revision of the code that made the run, when known
    git_rev: str | None = None
    #: the run it is compared with
    baseline: str | None = None
    #: the schedule and the slot that made it, if a schedule did
    schedule_id: str | None = None
    slot: datetime | None = None
    status: JobStatus = JobStatus.queued
    #: shared/evals/scoring.py RunScores, at the end
    scores: dict[str, Any] | None = None
    #: shared/evals/regress.py Regressions, at the end (when there was a baseline)
    regressions: dict[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


class CaseResult(BaseModel):
    """A case's score in a run (shared/evals/scoring.py CaseScore, with the output it judged)."""

    run_id: str
    case_id: str
    passed: bool
    score: float
    #: each assertion's Outcome, as JSON
    outcomes: list[dict[str, Any]]
    label: float | None = None
    expected_label: float | None = None
    output: str | None = None
    error: str | None = None


class ScheduleRecord(BaseModel):
    id: str = Field(pattern=ID_PATTERN)
    owner: str | None = None
    #: the suite's stored id
    suite_id: str
    model: str | None = None
    #: five fields, UTC (croniter)
    cron: str = Field(max_length=200)
    enabled: bool = True
    created_at: datetime | None = None
    #: the last slot claimed
    last_slot: datetime | None = None


def new_run_id(suite_id: str) -> str:
    """A fresh run id: the suite's id, the time (UTC) and a random tail, e.g. `grading-ca-20261206-091500-3fa2c1`."""
    return f"{suite_id[:80]}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
