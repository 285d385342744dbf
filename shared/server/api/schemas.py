"""The API's request and response bodies, as they appear in openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.models import Item, JobOptions, JobStatus, Rejection, Summary

EXAMPLE_JOB = {
    "id": "essays-2026-11",
    "template": "Grade this essay from 0 to 5 and explain briefly.\n\n{{ essay }}",
    "items": [{"custom_id": "essay-1", "fields": {"essay": "El canvi climàtic és..."}}],
    "sampling": {"max_tokens": 200, "temperature": 0.7},
    "response_format": {"type": "json_schema", "json_schema": {"name": "grade", "schema": {
        "type": "object", "properties": {"nota": {"type": "integer", "minimum": 0, "maximum": 5},
                                         "feedback": {"type": "string"}},
        "required": ["nota", "feedback"]}}},
}


class JobIn(JobOptions):
    """A job: options plus 1..MAX_ITEMS_PER_JOB items. `id` is the idempotency key.

    This is the wire format every transport carries (`Job.wire()`): a job validated elsewhere
    (the SDK) may bring the items it refused as `rejected`; each becomes an error result.
    """

    items: list[Item] = Field(min_length=1)
    rejected: list[Rejection] = Field(default_factory=list)
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_JOB]})


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    total: int
    #: False when a job with this id was already known: nothing new was started
    created: bool
    #: a rough guide: total / ESTIMATE_ITEMS_PER_S
    estimated_time_s: float | None
    status_url: str
    events_url: str
    results_url: str
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "essays-2026-11", "status": "queued", "total": 2000, "created": True, "estimated_time_s": 400.0,
        "status_url": "/v1/jobs/essays-2026-11", "events_url": "/v1/jobs/essays-2026-11/events",
        "results_url": "/v1/jobs/essays-2026-11/results"}]})


class JobView(BaseModel):
    id: str
    status: JobStatus
    model: str | None
    total: int
    completed: int
    failed: int
    percentage: float
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    summary: Summary | None
    metadata: dict[str, Any]
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "essays-2026-11", "status": "running", "model": "my-org/grader", "total": 2000, "completed": 840,
        "failed": 3, "percentage": 42.15, "created_at": "2026-11-22T10:00:00Z", "started_at": "2026-11-22T10:00:04Z",
        "finished_at": None, "error": None, "summary": None, "metadata": {}}]})


class JobList(BaseModel):
    #: the most recent jobs first
    data: list[JobView]


class ResultsPage(BaseModel):
    job_id: str
    format: Literal["ours", "openai"]
    #: Result objects (ours) or OpenAI Batch output lines (openai), ordered by custom_id
    data: list[dict[str, Any]]
    #: pass as `after` to get the next page; null on the last page
    next_after: str | None


class IssueOut(BaseModel):
    message: str
    field: str
    index: int | None
    line: int | None
    code: str


class Problem(BaseModel):
    detail: str | list[IssueOut]
    #: on a failure of the server (5xx): quote it to the operator; the server's log has the full text under it
    error_id: str | None = None
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": [{
        "message": "Input should be less than or equal to 2", "field": "sampling.temperature", "index": None,
        "line": None, "code": "invalid_item"}]}]})


class Cancelled(BaseModel):
    id: str
    #: True: it had not started and never will; False: a running job stops at its next chunk
    stopped_before_start: bool
    status: JobStatus


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    ready: bool
    #: only with a valid key (or on a server with no API_KEYS): the dispatcher, its stats, each check's
    #: "ok" or "failed: <kind> (error id ...)"
    checks: dict[str, Any] | None = None
