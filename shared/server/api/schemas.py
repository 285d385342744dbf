"""The API's request and response bodies, as they appear in openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.models import Item, JobOptions, JobStatus, Rejection, Summary
from shared.contracts.openai_files import BatchList, BatchObject, FileObject  # noqa: F401 (the API's bodies too)

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


class JobFromFile(JobOptions):
    """A job whose items are the lines of a file uploaded with POST /v1/files (validated there, line by
    line, and staged in the store): its options and the file's id, no items."""

    input_file_id: str = Field(min_length=1, examples=["file-0123456789abcdef01234567"])
    model_config = ConfigDict(extra="forbid")


class JobAccepted(BaseModel):
    id: str
    #: the id of the job's row in the store (see JobView.store_id)
    store_id: str
    status: JobStatus
    total: int
    #: False when a job with this id was already known: nothing new was started
    created: bool
    #: total over the model's throughput measured on its last completed jobs (one worker's), or over
    #: ESTIMATE_ITEMS_PER_S before it has any
    estimated_time_s: float | None
    #: the completed jobs the estimate was measured on; 0: ESTIMATE_ITEMS_PER_S (nothing measured yet)
    estimate_from_jobs: int = 0
    status_url: str
    events_url: str
    results_url: str
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "essays-2026-11", "store_id": "2bd806c97f:essays-2026-11", "status": "queued", "total": 2000,
        "created": True, "estimated_time_s": 400.0, "estimate_from_jobs": 12,
        "status_url": "/v1/jobs/essays-2026-11", "events_url": "/v1/jobs/essays-2026-11/events",
        "results_url": "/v1/jobs/essays-2026-11/results"}]})


class JobView(BaseModel):
    #: the id you know the job by (the one you chose, or was chosen for you)
    id: str
    #: the id of the job's row in the store: what Supabase Realtime filters on (`id=eq.<store_id>`).
    #: An owner's ids are stored under their prefix (README, "Owners")
    store_id: str
    #: who owns it: a Supabase user id or a key's owner; null for an admin's job
    owner: str | None = None
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
        "id": "essays-2026-11", "store_id": "2bd806c97f:essays-2026-11", "owner": "alice", "status": "running",
        "model": "my-org/grader", "total": 2000, "completed": 840,
        "failed": 3, "percentage": 42.15, "created_at": "2026-11-22T10:00:00Z", "started_at": "2026-11-22T10:00:04Z",
        "finished_at": None, "error": None, "summary": None, "metadata": {}}]})


class JobList(BaseModel):
    #: the most recent jobs first
    data: list[JobView]
    #: pass as `after` for the next page; null on the last page
    next_after: str | None = None


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


# ## OpenAI's Files and Batches API (shared/server/api/openai_routes.py)

class OpenAIErrorBody(BaseModel):
    message: str
    #: "invalid_request_error" (the caller's request) or "server_error"
    type: str
    #: the field at fault, when one is
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """What OpenAI's clients read from an error answer (the openai package raises e.g. NotFoundError)."""

    error: OpenAIErrorBody
    #: on a failure of the server (5xx): quote it to the operator; the server's log has the full text under it
    error_id: str | None = None
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "message": "no batch 'batch_0123'", "type": "invalid_request_error", "param": None, "code": "not_found"}}]})


class BatchIn(BaseModel):
    """`POST /v1/batches`: a batch over an uploaded file (`POST /v1/files`, purpose=batch)."""

    input_file_id: str = Field(min_length=1, max_length=256)
    endpoint: Literal["/v1/chat/completions", "/v1/completions"]
    completion_window: Literal["24h"]
    #: up to 16 string pairs (keys up to 64 characters, values up to 512)
    metadata: dict[str, str] | None = None
    #: accepted and ignored: results are kept with the job
    output_expires_after: dict[str, Any] | None = None
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "input_file_id": "file-0123456789abcdef01234567", "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"project": "essays"}}]})



# ## Named tasks


class TaskView(BaseModel):
    id: str
    description: str
    #: the names an item's `fields` fill in the task's template
    fields: list[str]
    #: the job options it sets (system, template, response_format, sampling, model, ...): a job's own win
    options: dict[str, Any]


class TaskList(BaseModel):
    data: list[TaskView]


# ## GET /v1/models (shared/server/api/model_routes.py)


class ModelView(BaseModel):
    """A model as OpenAI lists it: the base model, or a LoRA adapter over it (its `parent`)."""

    id: str
    object: Literal["model"] = "model"
    #: when it was listed (seconds since the epoch); 0: not known
    created: int = 0
    owned_by: str = "llm-jobs"
    #: the base model an adapter runs over; null for the base model itself
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelView]
