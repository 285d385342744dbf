"""The API's routes: thin functions over `JobLifecycle`, grouped in two routers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from shared.contracts.errors import InputError
from shared.contracts.events import ChunkEvent
from shared.contracts.models import ID_PATTERN, Job, JobRecord, JobStatus
from shared.contracts.openai_batch import to_openai
from shared.observability.metrics import CHUNK_TO_SSE
from shared.server.api.app import AppState, Caller, MaySeeDetails, State
from shared.server.api.credentials import Principal
from shared.server.api.gc_pause import full_collections_deferred
from shared.server.api.intake import FileJob, intake_of
from shared.server.api.problems import RETRY_AFTER_S
from shared.server.api.schemas import (
    Cancelled,
    Health,
    JobAccepted,
    JobList,
    JobView,
    Problem,
    Ready,
    ResultsPage,
    TaskList,
    TaskView,
)
from shared.server.api.streams import SlottedEventSource
from shared.server.api.tenancy import as_seen, claim, job_of
from shared.server.estimates import Throughput
from shared.server.lifecycle import Accepted

ERRORS = {401: {"model": Problem, "description": "no API key"}, 403: {"model": Problem, "description": "wrong key"},
          429: {"model": Problem, "description": "rate limited"}}
NOT_FOUND = {404: {"model": Problem}, **ERRORS}

health = APIRouter(tags=["health"])
jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"])
tasks = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@health.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@health.get("/readyz", response_model=Ready, response_model_exclude_none=True, responses={503: {"model": Ready}},
            openapi_extra={"security": [{}, {"bearer": []}]})  # a key is optional: it shows the details
async def readyz(state: AppState, details: MaySeeDetails) -> JSONResponse:
    """`{"ready": true}`, or 503 `{"ready": false}`. With a valid key (or no API_KEYS set: a local server), the
    checks too. A failed check names its kind and an error id, never its text (that is in the log)."""
    seen = await state.readiness.check()  # cached READYZ_CACHE_S seconds (shared/server/api/readiness.py)
    body = Ready(ready=seen.ok, checks=seen.checks if details else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if seen.ok else 503)


_JSONL_EXAMPLE = ('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", '
                  '"messages": [{"role": "user", "content": "Hi"}]}}\n')


@jobs.post("", response_model=JobAccepted, status_code=202,
           responses={200: {"model": JobAccepted, "description": "a job with this id is known: nothing new ran"},
                      413: {"model": Problem}, 422: {"model": Problem}, **ERRORS},
           openapi_extra={"requestBody": {"required": True, "content": {
               "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/JobIn"},
                                                         {"$ref": "#/components/schemas/JobFromFile"}]}},
               "application/jsonl": {"schema": {"type": "string"}, "example": _JSONL_EXAMPLE}}}})
async def submit(request: Request, state: AppState, who: Caller,
                 id: Annotated[str | None, Query(description="job id for a JSONL body (the idempotency key)",
                                                 pattern=ID_PATTERN)] = None,
                 strict: Annotated[bool, Query(description="refuse the job if any item is invalid; with "
                                               "false, bad items become error results")] = True,
                 task: Annotated[str | None, Query(description="a named task (GET /v1/tasks) for a JSONL body",
                                                   pattern=ID_PATTERN)] = None) -> JSONResponse:
    raw = await read_body(request, state.settings.max_body_bytes)
    with full_collections_deferred():  # a big job's objects would make each full GC stall every request
        job = await _parse(raw, request, state, job_id=id, strict=strict, task=task)
        if isinstance(job, FileJob):  # its items are an uploaded file's lines, staged already
            accepted = await state.lifecycle.submit_file(claim(job.options, who), job.file_id)
        else:
            accepted = await state.lifecycle.submit(claim(job, who))
        del job
    rate = await state.lifecycle.throughput(accepted.job.model, accepted.job.task)
    return JSONResponse(_accepted(accepted, who, rate).model_dump(), status_code=202 if accepted.dispatched else 200)


@jobs.get("", response_model=JobList, responses=ERRORS)
async def list_jobs(state: AppState, who: Caller,
                    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    after: Annotated[str | None, Query(description="the id of the last job of the previous page "
                                                       "(its `next_after`)")] = None) -> JobList:
    """The caller's jobs (an admin key: everyone's), newest first, a page at a time."""
    try:
        stored_after = who.stored(after) if after is not None else None
    except InputError:
        return JobList(data=[], next_after=None)
    page = await state.lifecycle.list(limit=limit, status=status, owner=who.owner, after=stored_after)
    return JobList(data=[_view(r, who) for r in page],
                   next_after=who.public(page[-1].id) if len(page) == limit else None)


@jobs.get("/{job_id}", response_model=JobView, responses=NOT_FOUND)
async def get_job(job_id: str, state: AppState, who: Caller) -> JobView:
    return _view(await job_of(state.lifecycle, who, job_id), who)


@jobs.get("/{job_id}/results", response_model=ResultsPage, responses=NOT_FOUND)
async def results(job_id: str, state: AppState, who: Caller,
                  after: Annotated[str | None, Query(description="the last custom_id of the previous page")] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  format: Annotated[Literal["ours", "openai"], Query()] = "ours") -> ResultsPage:
    record = await job_of(state.lifecycle, who, job_id)
    page, next_after = await state.lifecycle.results(record.id, after=after, limit=limit)
    if format == "openai":
        model = record.model or "unknown"
        data = [to_openai(r, job_id=job_id, model=model) for r in page]
    else:
        data = [r.model_dump(mode="json") for r in page]
    return ResultsPage(job_id=job_id, format=format, data=data, next_after=next_after)


@jobs.get("/{job_id}/events", responses={
    200: {"content": {"text/event-stream": {}}, "description": "`chunk` events (results and progress), then "
          "`final`; `progress` events when the dispatcher publishes none. Each has an `id`: reconnect with "
          "Last-Event-ID to resume with no gap and no repeat."},
    **NOT_FOUND, 429: {"model": Problem, "description": "rate limited, or this key holds SSE_MAX_STREAMS_PER_KEY "
                       "open event streams already"}})
async def events(job_id: str, request: Request, state: AppState, who: Caller,
                 last_event_id: Annotated[str | None, Header()] = None,
                 after: Annotated[str | None, Query(description="same as Last-Event-ID, for clients that "
                                                    "cannot set headers")] = None) -> SlottedEventSource:
    record = await job_of(state.lifecycle, who, job_id)
    slot = state.streams.take(who.who)  # given back when the response is over, however it ends (streams.py)
    if slot is None:
        raise HTTPException(429, f"this API key holds {state.streams.per_key} open event streams already (the "
                                 "most one key may hold); close one and try again",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    try:
        return SlottedEventSource(_stream(state, record.id, who, last_event_id or after, request), slot=slot,
                                  ping=state.settings.sse_ping_s, send_timeout=state.settings.http_timeout_s)
    except BaseException:
        slot.release()
        raise


@jobs.post("/{job_id}/cancel", response_model=Cancelled, responses=NOT_FOUND)
async def cancel(job_id: str, state: AppState, who: Caller) -> Cancelled:
    done = await state.lifecycle.cancel((await job_of(state.lifecycle, who, job_id)).id)
    return Cancelled(id=job_id, stopped_before_start=done.stopped_before_start, status=done.record.status)


@tasks.get("", response_model=TaskList, responses=ERRORS)
async def list_tasks(state: AppState, who: Caller) -> TaskList:
    """The named tasks a job may name (`"task": "grade-ca"`, or `?task=` for a JSONL body): presets of a job's
    options, so that a client sends only records. A job's own options win over its task's."""
    return TaskList(data=[TaskView(id=t.id, description=t.description, fields=t.fields(), options=t.options)
                          for t in state.tasks.values()])


# ## Helpers


async def _stream(state: State, job_id: str, who: Principal, last_id: str | None,
                  request: Request) -> AsyncIterator[dict[str, Any]]:
    async for ev in state.lifecycle.follow(job_id, last_id, stop=request.is_disconnected):
        if isinstance(ev.event, ChunkEvent) and ev.event.stored_at is not None:  # stored -> sent, for /metrics
            CHUNK_TO_SSE.observe(max(0.0, time.time() - ev.event.stored_at))
        yield {"id": ev.id, "event": ev.event.type, "data": as_seen(ev.event, who).model_dump_json()}


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 once it is over `limit` bytes (declared or read)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(raw: bytes, request: Request, state: State, *, job_id: str | None, strict: bool,
                 task: str | None = None) -> Job | FileJob:
    """The body as a validated Job (or a job of an uploaded file), validated in a worker thread
    (shared/server/api/intake.py)."""
    intake = intake_of(request.app.state, state.settings, state.limits, state.tasks)
    return await intake.parse(raw, request.headers.get("content-type", "application/json"), job_id=job_id,
                              strict=strict, task=task)


def _accepted(accepted: Accepted, who: Principal, rate: Throughput) -> JobAccepted:
    job_id = who.public(accepted.job.id)
    base = f"/v1/jobs/{job_id}"  # ID_PATTERN's characters need no escaping in a path
    return JobAccepted(id=job_id, store_id=accepted.job.id, status=accepted.status, total=accepted.total,
                       created=accepted.created, estimated_time_s=rate.seconds(accepted.total),
                       estimate_from_jobs=rate.from_jobs, status_url=base, events_url=f"{base}/events",
                       results_url=f"{base}/results")


def _view(r: JobRecord, who: Principal) -> JobView:
    return JobView(id=who.public(r.id), store_id=r.id, owner=r.owner, status=r.status, model=r.model, total=r.total,
                   completed=r.completed, failed=r.failed, percentage=r.percentage, created_at=r.created_at,
                   started_at=r.started_at, finished_at=r.finished_at, error=r.error, summary=r.summary,
                   metadata=r.metadata)
