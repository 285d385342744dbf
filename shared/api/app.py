"""The HTTP API: submit a job, follow it live (SSE), read its results, cancel it.

    create_app(settings) -> FastAPI      # `llm-jobs serve`, or mounted by modal_app.py

Routes (all under /v1 need `Authorization: Bearer <key>` when API_KEYS is set):
    POST /v1/jobs                    a Job (JSON), or items / OpenAI Batch lines (JSONL) -> 202 (200 if known)
    GET  /v1/jobs/{id}               status and progress, from the store
    GET  /v1/jobs/{id}/results       ?after=&limit=&format=ours|openai, paginated by custom_id
    GET  /v1/jobs/{id}/events        Server-Sent Events; Last-Event-ID resumes; ends after `final`
    POST /v1/jobs/{id}/cancel
    GET  /healthz                    the process is up
    GET  /readyz                     the store and the dispatcher answer, with details
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from shared.api.auth import KeyRing, MemoryRateLimit, UpstashRateLimit, rate_limiter
from shared.api.dispatch import Dispatcher, make_dispatcher
from shared.api.events import TERMINAL, follow
from shared.api.schemas import Cancelled, Health, JobAccepted, JobIn, JobView, Problem, Ready, ResultsPage
from shared.errors import InputError, Issue, LLMJobsError, QueueError, StoreError
from shared.inputs import parse_job_document, parse_job_text
from shared.models import Job, JobRecord, JobStatus, Summary, new_job_id
from shared.openai_batch import to_openai
from shared.prepare import Limits
from shared.runpod_client import RunpodError
from shared.settings import Settings, get_settings
from shared.stores import Store, open_store

ERRORS = {401: {"model": Problem, "description": "no API key"}, 403: {"model": Problem, "description": "wrong key"},
          429: {"model": Problem, "description": "rate limited"}}


class State:
    def __init__(self, settings: Settings, store: Store, dispatcher: Dispatcher, keys: KeyRing,
                 limiter: MemoryRateLimit | UpstashRateLimit | None):
        self.settings, self.store, self.dispatcher, self.keys, self.limiter = settings, store, dispatcher, keys, limiter
        self.limits = Limits.from_settings(settings)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               dispatcher: Dispatcher | None = None) -> FastAPI:
    settings = settings or get_settings()
    store = store or open_store(settings)
    state = State(settings, store, dispatcher or make_dispatcher(settings, store),
                  KeyRing.from_setting(settings.api_keys), rate_limiter(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.dispatcher.close()
        if state.limiter is not None:
            await state.limiter.close()
        await state.store.close()

    app = FastAPI(title="llm-jobs", version="0.1.0", lifespan=lifespan,
                  description="Batch LLM jobs: submit, follow live, read results, cancel. "
                              "Every result is stored once; events stream as chunks are stored.")
    app.state.llm_jobs = state
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                           expose_headers=["Retry-After", "X-RateLimit-Remaining"])
    _errors(app)
    _routes(app, state)
    app.openapi = lambda: _openapi(app)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def invalid(request: Request, e: InputError) -> JSONResponse:
        return JSONResponse({"detail": [i.as_dict() for i in e.issues]}, status_code=422)

    @app.exception_handler(LLMJobsError)
    async def unavailable(request: Request, e: LLMJobsError) -> JSONResponse:
        code = 502 if isinstance(e, RunpodError) else 503 if isinstance(e, (StoreError, QueueError)) else 500
        return JSONResponse({"detail": str(e)}, status_code=code)


async def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    state: State = request.app.state.llm_jobs
    who = "anonymous"
    if state.keys.enabled:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "send Authorization: Bearer <API key>", headers={"WWW-Authenticate": "Bearer"})
        key_id = state.keys.identify(authorization[7:].strip())
        if key_id is None:
            raise HTTPException(403, "this API key is not valid")
        who = key_id
    if state.limiter is not None:
        verdict = await state.limiter.check(who)
        if not verdict.allowed:
            raise HTTPException(429, f"over {verdict.limit} requests a minute",
                                headers={"Retry-After": str(math.ceil(verdict.reset_s))})
    return who


Caller = Annotated[str, Depends(_caller)]


async def _body(request: Request, limit: int) -> bytes:
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


def _parse(raw: bytes, content_type: str, state: State, *, job_id: str | None, strict: bool) -> tuple[Job, dict]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError([Issue(f"the body is not UTF-8: {e}")]) from e
    checks = {"limits": state.limits, "any_model": True, "strict": strict}
    if "json" in content_type and "jsonl" not in content_type and "ndjson" not in content_type:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError([Issue(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})")]) from e
        if isinstance(doc, dict) and job_id and not doc.get("id"):
            doc = {**doc, "id": job_id}
        if isinstance(doc, dict) and not doc.get("id"):
            doc = {**doc, "id": new_job_id()}
        return parse_job_document(doc, **checks), doc
    # JSONL: items or OpenAI Batch lines, one a line; the id (idempotency key) comes from ?id=
    job = parse_job_text(text, options={"id": job_id or new_job_id()}, **checks)
    return job, {"id": job.id, "result_format": job.result_format,
                 "items": [_line(line) for line in text.splitlines() if line.strip()]}


def _line(line: str) -> Any:
    """A JSONL line for the forwarded document; a broken one stays a string, so the worker rejects it too."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return line


def _view(r: JobRecord) -> JobView:
    done = r.completed + r.failed
    return JobView(id=r.id, status=r.status, model=r.model, total=r.total, completed=r.completed, failed=r.failed,
                   percentage=round(100 * done / r.total, 2) if r.total else 0.0, created_at=r.created_at,
                   started_at=r.started_at, finished_at=r.finished_at, error=r.error, summary=r.summary,
                   metadata=r.metadata)


async def _record(state: State, job_id: str) -> JobRecord:
    record = await state.store.get_job(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return record


def _routes(app: FastAPI, state: State) -> None:
    s = state.settings

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, tags=["health"], responses={503: {"model": Ready}})
    async def readyz() -> JSONResponse:
        checks: dict[str, Any] = {"dispatcher": state.dispatcher.name}
        ok = True
        try:
            await state.store.get_job("readyz-probe")
            checks["store"] = "ok"
        except LLMJobsError as e:
            ok, checks["store"] = False, str(e)
        try:
            checks.update(await asyncio.wait_for(state.dispatcher.ready(), s.http_timeout_s))
        except (LLMJobsError, TimeoutError) as e:
            ok, checks["dispatch"] = False, str(e) or "no answer in time"
        return JSONResponse(Ready(ready=ok, checks=checks).model_dump(), status_code=200 if ok else 503)

    @app.post("/v1/jobs", response_model=JobAccepted, status_code=202, tags=["jobs"],
              responses={200: {"model": JobAccepted, "description": "a job with this id is known: nothing new ran"},
                         413: {"model": Problem}, 422: {"model": Problem}, **ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/JobIn"}},
                  "application/jsonl": {"schema": {"type": "string"},
                                        "example": '{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",'
                                                   ' "body": {"model": "m", "messages": [{"role": "user", '
                                                   '"content": "Hi"}]}}\n'}}}})
    async def submit(request: Request, who: Caller,
                     id: Annotated[str | None, Query(description="job id for a JSONL body (the idempotency key)",
                                                     pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")] = None,
                     strict: Annotated[bool, Query(description="refuse the job if any item is invalid; with "
                                                   "false, bad items become error results")] = True) -> JSONResponse:
        raw = await _body(request, s.max_body_bytes)
        job, doc = _parse(raw, request.headers.get("content-type", "application/json"), state, job_id=id, strict=strict)
        created = await state.store.accept(job)
        if not created:
            record = await _record(state, job.id)
            if record.status not in (JobStatus.failed, JobStatus.cancelled):
                return JSONResponse(_accepted(job, record.status, created=False).model_dump(), status_code=200)
        await state.dispatcher.submit(job, doc)  # a known failed/cancelled job runs again and resumes
        return JSONResponse(_accepted(job, JobStatus.queued, created=created).model_dump(), status_code=202)

    def _accepted(job: Job, status: JobStatus, *, created: bool) -> JobAccepted:
        base = f"/v1/jobs/{job.id}"
        return JobAccepted(id=job.id, status=status, total=job.total, created=created,
                           estimated_time_s=round(job.total / s.estimate_items_per_s, 1),
                           status_url=base, events_url=f"{base}/events", results_url=f"{base}/results")

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses={404: {"model": Problem}, **ERRORS})
    async def get_job(job_id: str, who: Caller) -> JobView:
        return _view(await _record(state, job_id))

    @app.get("/v1/jobs/{job_id}/results", response_model=ResultsPage, tags=["jobs"],
             responses={404: {"model": Problem}, **ERRORS})
    async def results(job_id: str, who: Caller,
                      after: Annotated[str | None, Query(description="the last custom_id of the previous page")] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      format: Annotated[Literal["ours", "openai"], Query()] = "ours") -> ResultsPage:
        record = await _record(state, job_id)
        page = await state.store.results(job_id, after=after, limit=limit)
        model = record.model or "unknown"
        data = [to_openai(r, job_id=job_id, model=model) if format == "openai" else r.model_dump(mode="json")
                for r in page]
        return ResultsPage(job_id=job_id, format=format, data=data,
                           next_after=page[-1].custom_id if len(page) == limit else None)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], responses={
        200: {"content": {"text/event-stream": {}}, "description": "`chunk` events (results and progress), then "
              "`final`; `progress` events when the dispatcher publishes none. Each has an `id`: reconnect with "
              "Last-Event-ID to resume with no gap and no repeat."}, 404: {"model": Problem}, **ERRORS})
    async def events(job_id: str, request: Request, who: Caller,
                     last_event_id: Annotated[str | None, Header()] = None,
                     after: Annotated[str | None, Query(description="same as Last-Event-ID, for clients that "
                                                        "cannot set headers")] = None) -> EventSourceResponse:
        await _record(state, job_id)
        return EventSourceResponse(_stream(state, job_id, last_event_id or after, request), ping=s.sse_ping_s,
                                   send_timeout=s.http_timeout_s)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=Cancelled, tags=["jobs"],
              responses={404: {"model": Problem}, **ERRORS})
    async def cancel(job_id: str, who: Caller) -> Cancelled:
        record = await _record(state, job_id)
        if record.status in TERMINAL:
            return Cancelled(id=job_id, stopped_before_start=False, status=record.status)
        before_start = await state.dispatcher.cancel(job_id) and record.status == JobStatus.queued
        if before_start:
            summary = Summary.empty(record.total, "cancelled before it ran")
            await state.store.finish(job_id, JobStatus.cancelled, summary)
        return Cancelled(id=job_id, stopped_before_start=before_start, status=(await _record(state, job_id)).status)


async def _stream(state: State, job_id: str, last_id: str | None, request: Request) -> AsyncIterator[dict[str, Any]]:
    async for ev in follow(state.dispatcher.events, state.store, job_id, last_id, poll_s=state.settings.sse_poll_s,
                           stop=request.is_disconnected):
        yield {"id": ev.id, "event": ev.data.get("type", "message"), "data": json.dumps(ev.data)}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    job_schema = JobIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(job_schema.pop("$defs", {}))
    components["JobIn"] = job_schema
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, ops in schema["paths"].items():
        if path.startswith("/v1/"):
            for op in ops.values():
                op["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
