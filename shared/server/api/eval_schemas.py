"""The bodies of the eval and schedule routes (shared/server/api/eval_routes.py), as openapi.json shows them.

Ids are the caller's: an owner sends and reads the ids they chose; `store_id` is the row's id in
the store (an owner's ids are stored under their prefix, README "Owners"). An eval run's id is its
job's, so `/v1/jobs/{id}/events` and `/results` follow and read it like any job.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.models import ID_PATTERN, JobStatus
from shared.evals.records import CaseResult
from shared.evals.regress import Regressions
from shared.evals.scoring import RunScores

_ID_RULE = "letters, digits and . _ : -, up to 128 (an owner's: up to 117)"


class SuiteView(BaseModel):
    #: the suite's id, as written in its document
    id: str
    store_id: str
    #: the latest version's content hash
    version: str
    cases: int
    #: False when this version was stored already (nothing changed)
    created: bool | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class EvalRunIn(BaseModel):
    """Run a stored suite's latest version (`POST /v1/evals/suites` first) as a job."""

    suite: str = Field(min_length=1, max_length=128, description="the suite's id")
    #: the model to run it on [default: the suite's, or the server's]
    model: str | None = Field(default=None, max_length=256)
    #: a run of the same suite to compare with: its id, or "last" (its newest finished run)
    baseline: str | None = Field(default=None, max_length=128)
    #: the LoRA adapter that answers the cases (`GET /v1/models` lists them) [default: none, the model itself]
    adapter: str | None = Field(default=None, pattern=ID_PATTERN, description="a LoRA adapter's name")
    #: the run's id, which is also its job's: the idempotency key [default: new]
    id: str | None = Field(default=None, pattern=ID_PATTERN, description=_ID_RULE)
    #: the code revision to record with the run
    git_rev: str | None = Field(default=None, max_length=64)
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"suite": "grading-ca", "model": "my-org/grader", "baseline": "last"},
        {"suite": "grading-ca", "adapter": "grades-ca", "baseline": "last"}]})


class EvalRunView(BaseModel):
    #: the run's id; its job has the same id (`/v1/jobs/{id}/events`, `/results`)
    id: str
    store_id: str
    owner: str | None = None
    suite: str
    version: str
    model: str | None
    adapter: str | None = None
    git_rev: str | None = None
    baseline: str | None = None
    schedule_id: str | None = None
    slot: datetime | None = None
    #: queued, running, then completed, failed or cancelled once scored
    status: JobStatus
    #: the job's progress: completed and failed items of total
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    #: once the run has ended: pass rate, per assertion, metric means, grading agreement
    scores: RunScores | None = None
    #: once the run has ended, when it had a baseline
    regressions: Regressions | None = None
    #: true when `regressions` lists a case or a metric
    regressed: bool | None = None
    status_url: str
    events_url: str
    results_url: str
    cases_url: str


class EvalRunPage(BaseModel):
    #: the suite's runs, newest first
    data: list[EvalRunView]
    #: pass as `before` for the next (older) page; null on the last page
    next_before: str | None = None


class CaseResultPage(BaseModel):
    run_id: str
    #: in case id order
    data: list[CaseResult]
    #: pass as `after` for the next page; null on the last page
    next_after: str | None = None


class ScheduleIn(BaseModel):
    """Run a stored suite on a cron expression (UTC): each due slot makes one run, however many workers tick."""

    id: str = Field(pattern=ID_PATTERN, description=_ID_RULE)
    suite: str = Field(min_length=1, max_length=128, description="the suite's id (POST /v1/evals/suites first)")
    cron: str = Field(min_length=1, max_length=200, examples=["0 3 * * *"])
    model: str | None = Field(default=None, max_length=256)
    enabled: bool = True
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "compliance-nightly", "suite": "compliance", "cron": "0 3 * * *"}]})


class ScheduleView(BaseModel):
    id: str
    store_id: str
    owner: str | None = None
    suite: str
    model: str | None = None
    cron: str
    enabled: bool
    created_at: datetime | None = None
    #: the last slot that made a run
    last_slot: datetime | None = None


class ScheduleList(BaseModel):
    data: list[ScheduleView]
