"""The grading service's own API, kept exactly, over llm-jobs (issue 15): its clients connect unchanged.

    POST /evaluate          {items: [{id_alumno, curso, consigna, respuesta}], ...}
                            -> {job_id, total_items, estimated_time_seconds, status, stream_url}
    GET  /stream/{job_id}   SSE: `batch_complete` every BATCH results, then `complete`
    GET  /health            {status, model_loaded, gpu_available, active_jobs}

An /evaluate is an ordinary job of the `grade-ca` task (tasks/grade-ca.yaml): each answer is an
item whose custom_id is the student's id, so it is stored, streamed, resumed and sharded like any
job, and `/v1/jobs/{job_id}` shows it too. The stream regroups the job's results into batches of
BATCH, whatever the job's chunks; when the job ends it reads from the store whatever the events did
not carry (a trimmed stream, a dispatcher that publishes none), so every answer comes back once.
Auth is ours: `Authorization: Bearer <key>`, or the same key as `X-API-Key` (README, "The grading
service as a drop-in").
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from shared.contracts.errors import InputError, Issue, issues_of
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.inputs import parse_job_document
from shared.contracts.models import JobRecord, JobStatus, Result, ResultStatus
from shared.server.api.app import AppState, State, _caller
from shared.server.api.credentials import Principal
from shared.server.api.dropin_schemas import (
    Answer,
    BatchComplete,
    BatchProgress,
    Complete,
    EvaluateAccepted,
    EvaluateIn,
    Graded,
    ServiceHealth,
    as_dict,
)
from shared.server.api.intake import intake_of
from shared.server.api.problems import RETRY_AFTER_S
from shared.server.api.routes import ERRORS, NOT_FOUND, read_body
from shared.server.api.schemas import Problem
from shared.server.api.streams import SlottedEventSource
from shared.server.api.tenancy import claim, job_of

#: the task an /evaluate runs
TASK = "grade-ca"
#: results per `batch_complete`, as the service sent them
BATCH = 10
#: the job's metadata key saying every id_alumno was an integer (they come back as integers)
INT_IDS = "id_alumno_int"

dropin = APIRouter(tags=["grading service (drop-in)"])


async def _dropin_caller(request: Request, authorization: Annotated[str | None, Header()] = None,
                         x_api_key: Annotated[str | None, Header()] = None) -> Principal:
    """Our caller: the bearer token, or the same key sent as X-API-Key."""
    if authorization is None and x_api_key:
        authorization = f"Bearer {x_api_key}"
    return await _caller(request, authorization)


DropinCaller = Annotated[Principal, Depends(_dropin_caller)]


@dropin.post("/evaluate", response_model=EvaluateAccepted, status_code=202,
             responses={422: {"model": Problem}, 413: {"model": Problem}, **ERRORS},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": EvaluateIn.model_json_schema()}}}})
async def evaluate(request: Request, state: AppState, who: DropinCaller) -> JSONResponse:
    """Grade the answers with the `grade-ca` task: a job, followed at `stream_url`."""
    raw = await read_body(request, state.settings.max_body_bytes)
    intake = intake_of(request.app.state, state.settings, state.limits, state.tasks)
    job = await intake.run(lambda: _job_of(raw, state))
    accepted = await state.lifecycle.submit(claim(job, who))
    rate = await state.lifecycle.throughput(accepted.job.model, TASK)
    job_id = who.public(accepted.job.id)
    body = EvaluateAccepted(job_id=job_id, total_items=accepted.total, estimated_time_seconds=rate.seconds(
        accepted.total), status=accepted.status.value, stream_url=f"/stream/{job_id}")
    return JSONResponse(as_dict(body), status_code=202 if accepted.dispatched else 200)


def _job_of(raw: bytes, state: State) -> Any:
    """The body as a job of the grading task (in a worker thread): InputError naming each field."""
    try:
        body = EvaluateIn.model_validate_json(raw)
    except ValidationError as e:
        raise InputError(issues_of(e)) from None
    seen: dict[str, int] = {}
    issues = []
    for i, a in enumerate(body.items):
        if (first := seen.setdefault(str(a.id_alumno), i)) != i:
            issues.append(Issue(f"id_alumno {str(a.id_alumno)[:100]!r} repeats item {first}'s",
                                field=f"items.{i}.id_alumno", index=i))
    if issues:
        raise InputError(issues)
    doc = {"id": f"eval-{secrets.token_hex(8)}", "task": TASK, "chunk_size": BATCH,
           "metadata": {"service": "evaluate", INT_IDS: all(isinstance(a.id_alumno, int) for a in body.items)},
           "items": [_item(a) for a in body.items]}
    return parse_job_document(doc, limits=state.limits, any_model=True, strict=True, tasks=state.tasks)


def _item(a: Answer) -> dict[str, Any]:
    return {"custom_id": str(a.id_alumno), "fields": {"curso": a.curso, "consigna": a.consigna,
                                                       "respuesta": a.respuesta}}


@dropin.get("/stream/{job_id}", responses={
    200: {"content": {"text/event-stream": {}}, "description": "`batch_complete` every 10 results, then "
          "`complete`"}, **NOT_FOUND})
async def stream(job_id: str, request: Request, state: AppState, who: DropinCaller) -> SlottedEventSource:
    """The job's results in batches of 10 (`batch_complete`), then `complete`."""
    record = await job_of(state.lifecycle, who, job_id)
    slot = state.streams.take(who.who)
    if slot is None:
        raise HTTPException(429, f"this API key holds {state.streams.per_key} open event streams already",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    try:
        return SlottedEventSource(_batches(state, record, request), slot=slot, ping=state.settings.sse_ping_s,
                                  send_timeout=state.settings.http_timeout_s)
    except BaseException:
        slot.release()
        raise


class _Batcher:
    """Results into batches of BATCH, each once, with the service's progress figures."""

    def __init__(self, record: JobRecord):
        self.total = record.total
        self.int_ids = bool(record.metadata.get(INT_IDS))
        started = record.started_at or record.created_at
        self.t0 = time.monotonic() - (max(0.0, (datetime.now(UTC) - started).total_seconds()) if started else 0.0)
        self.sent: set[str] = set()
        self.pending: list[Result] = []
        self.number = 0

    def add(self, results: list[Result]) -> None:
        for r in results:
            if r.custom_id not in self.sent:
                self.sent.add(r.custom_id)
                self.pending.append(r)

    def batches(self, *, flush: bool = False) -> list[dict[str, Any]]:
        out = []
        while len(self.pending) >= BATCH or (flush and self.pending):
            part, self.pending = self.pending[:BATCH], self.pending[BATCH:]
            self.number += 1
            out.append({"event": "batch_complete", "data": BatchComplete(
                batch_number=self.number, results=[self._graded(r) for r in part],
                progress=self._progress(len(self.sent) - len(self.pending))).model_dump_json()})
        return out

    def _graded(self, r: Result) -> Graded:
        sid: str | int = int(r.custom_id) if self.int_ids and r.custom_id.lstrip("-").isdigit() else r.custom_id
        parsed = r.parsed if isinstance(r.parsed, dict) else {}
        if r.status is not ResultStatus.ok:
            return Graded(id_alumno=sid, nota=None, feedback=None, error=r.error.message if r.error else "failed")
        nota = parsed.get("nota")
        return Graded(id_alumno=sid, nota=nota if isinstance(nota, int) else None,
                      feedback=parsed.get("feedback") if isinstance(parsed.get("feedback"), str) else None)

    def _progress(self, done: int) -> BatchProgress:
        elapsed = time.monotonic() - self.t0
        avg = elapsed / done if done else None
        return BatchProgress(completed=done, total=self.total,
                             percentage=round(100.0 * done / self.total, 2) if self.total else 100.0,
                             elapsed_seconds=round(elapsed, 2),
                             avg_time_per_item=None if avg is None else round(avg, 3),
                             estimated_remaining_seconds=None if avg is None else round(avg * (self.total - done), 1))


async def _batches(state: State, record: JobRecord, request: Request) -> AsyncIterator[dict[str, Any]]:
    b = _Batcher(record)
    async for ev in state.lifecycle.follow(record.id, None, stop=request.is_disconnected):
        if isinstance(ev.event, ChunkEvent):
            b.add(ev.event.results)
            for out in b.batches():
                yield out
        elif isinstance(ev.event, FinalEvent):
            after: str | None = None
            while True:  # what the events did not carry
                page, after = await state.lifecycle.results(record.id, after=after, limit=1000)
                b.add(page)
                if after is None:
                    break
            for out in b.batches(flush=True):
                yield out
            yield {"event": "complete", "data": Complete(
                total_processed=len(b.sent), total_time_seconds=round(time.monotonic() - b.t0, 2),
                status=ev.event.outcome.value).model_dump_json()}
            return


@dropin.get("/health", response_model=ServiceHealth)
async def health(state: AppState) -> ServiceHealth:
    """The service's health: `model_loaded` is whether the dispatcher can run jobs (for the local one: its
    engine is up); `gpu_available` is the local engine's (null when the model runs on workers elsewhere);
    `active_jobs` counts queued and running jobs."""
    seen = await state.readiness.check()
    local = seen.checks.get("dispatcher") == "local"
    model_loaded = seen.ok and (not local or bool(seen.checks.get("engine")))
    store = state.lifecycle.store
    active = 0
    for status in (JobStatus.queued, JobStatus.running):
        active += len(await store.list_jobs(status=status, limit=1000))
    # the local dispatcher names its engine's GPUs, and none on a CPU (shared/server/dispatch.py `_gpus`)
    gpu = bool(seen.checks.get("gpu")) if local and "engine" in seen.checks else None
    return ServiceHealth(status="healthy" if seen.ok else "unhealthy", model_loaded=model_loaded,
                         gpu_available=gpu, active_jobs=active)
