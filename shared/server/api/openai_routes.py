"""OpenAI's Files and Batches API, beside our own /v1/jobs: the official `openai` client works unchanged
with `base_url=<api>/v1` and an llm-jobs API key (the same Bearer key and rate limit as /v1/jobs).

    POST /v1/files                  multipart `file` (JSONL) and `purpose=batch`: streamed, checked line by
                                    line and staged as it arrives (shared/server/api/uploads.py)
    GET  /v1/files/{id}             OpenAI's File object (an upload, or a batch's output or error file)
    GET  /v1/files/{id}/content     streamed JSONL, page by page from the store:
                                      an upload: its lines as staged (each item's JSON; a refused line as
                                      {"custom_id", "error": {"code", "message", "line", "field"}}, since the
                                      original text is not kept)
                                      file-out-<batch id>: every `ok` result as an OpenAI Batch output line
                                      file-err-<batch id>: every error result, the same way (`error` filled;
                                      a line refused at upload names its line and field)
    POST /v1/batches                {input_file_id, endpoint, completion_window: "24h", metadata}: a job
                                    (`batch_<24 hex>`, result_format=openai) over the file's lines; an
                                    Idempotency-Key header sent again gives the same batch
    GET  /v1/batches                ?after=&limit=: batch jobs only, newest first, OpenAI's list shape
    GET  /v1/batches/{id}           OpenAI's Batch object, mapped from the job (shared/contracts/openai_files.py)
    POST /v1/batches/{id}/cancel    `cancelling` while it still runs, `cancelled` once it has ended

A batch is a job: `/v1/jobs/{id}` shows it too; its batch fields sit in the job's metadata under the
reserved key `_openai_batch`. Output and error files are derived from the job's results, never stored.

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so the openai package
raises its own classes (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413
APIStatusError, 429 RateLimitError): `OpenAIRoute` turns every error of these routes into one. Bad
parameters are 400 (as OpenAI answers), not 422. Failures of the server keep our rule (problems.py): a
generic message and an error id, the full text in the log.

Limits of this first version: `cancelling` is remembered by the API process that was asked (another
replica shows `in_progress` until the job has ended); `GET /v1/batches` scans the newest 10,000 jobs for
batch jobs (the store has no cursor by kind yet); files are not listed or deleted, and a key sees every
file and batch (as it sees every job).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shared.contracts.errors import InputError, Issue, NotFound, PayloadTooLarge
from shared.contracts.models import JobOptions, JobRecord, Rejection, ResultStatus
from shared.contracts.openai_batch import to_openai
from shared.contracts.openai_files import (
    BatchList,
    BatchObject,
    FileObject,
    ResultFile,
    batch_fields,
    batch_object,
    batch_of,
    file_object,
    metadata_problem,
    new_batch_id,
    parse_result_file_id,
    rejection_line,
    result_file_object,
    unix,
)
from shared.server.api.app import AppState, Caller, State
from shared.server.api.credentials import Principal
from shared.server.api.intake import intake_of
from shared.server.api.problems import answer
from shared.server.api.routes import read_body
from shared.server.api.schemas import BatchIn, OpenAIError
from shared.server.api.tenancy import claim, file_of, job_of
from shared.server.api.uploads import UploadRefused, receive_file
from shared.stores.base import item_json, retrying

#: a POST /v1/batches body (a few ids and 16 metadata pairs)
BATCH_BODY_MAX_BYTES = 64 * 1024
#: GET /v1/batches looks for batch jobs among this many of the newest jobs, at most
LIST_SCAN_MAX = 10_000
#: batches this process was asked to cancel and remembers (the oldest are forgotten first)
CANCELLING_MAX = 10_000


class OpenAIRoute(APIRoute):
    """A route whose every error answers in OpenAI's shape (the module docstring)."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:  # each kind is answered in openai_error
                return openai_error(request, e)

        return route


def _body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


_CODES = {401: "invalid_api_key", 403: "invalid_api_key", 404: "not_found", 413: "file_too_large",
          429: "rate_limit_exceeded"}


def openai_error(request: Request, e: Exception) -> JSONResponse:
    """An error of these routes as OpenAI's error body, with the status and headers it would have had."""
    match e:
        case UploadRefused():
            return JSONResponse(_body(e.status, e.message, param=e.param, code=e.code), e.status, headers=e.headers)
        case RequestValidationError():
            err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
            loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path", "header")]
            param = ".".join(loc) or None
            return JSONResponse(_body(400, f"{param}: {err['msg']}" if param else err["msg"], param=param,
                                      code="invalid_value"), 400)
        case StarletteHTTPException():
            return JSONResponse(_body(e.status_code, str(e.detail), code=_CODES.get(e.status_code)), e.status_code,
                                headers=e.headers)
        case NotFound():
            return JSONResponse(_body(404, str(e), code="not_found"), 404)
        case PayloadTooLarge():
            return JSONResponse(_body(413, e.message, code="too_large"), 413)
        case InputError():
            param = next((i.field for i in e.issues if i.field), None)
            return JSONResponse(_body(400, str(e), param=param, code="invalid_value"), 400)
        case ClientDisconnect():  # the client went away mid-upload: nobody reads this, nothing to log
            return JSONResponse(_body(400, "the request ended early"), 400)
    a = answer(e, where=f"{request.method} {request.url.path}")  # logged in full under the error id
    return JSONResponse({**_body(a.status, a.body["detail"]), "error_id": a.body["error_id"]}, a.status,
                        headers=a.headers)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": OpenAIError} for s in (*statuses, 400, 401, 403, 429)}


files = APIRouter(prefix="/v1/files", tags=["files"], route_class=OpenAIRoute)
batches = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=OpenAIRoute)


class JsonlStream(StreamingResponse):
    media_type = "application/jsonl"


# ## Files

_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "JSONL: one OpenAI Batch line or llm-jobs item per line"},
                   "purpose": {"type": "string", "enum": ["batch"]}}}}}}}


@files.post("", response_model=FileObject, responses=_errors(413), openapi_extra=_UPLOAD_BODY)
async def create_file(request: Request, state: AppState, who: Caller) -> FileObject:
    """Upload a JSONL file for a batch. It is read as it arrives and each line is checked: a bad line is
    kept as refused (it becomes an error line of the batch, naming the line and the field); a repeated
    custom_id refuses the file."""
    intake = intake_of(request.app.state, state.settings, state.limits, state.tasks)
    record = await receive_file(request, store=state.lifecycle.store, settings=state.settings, limits=state.limits,
                                slots=intake._slots, owner=who.owner)
    return file_object(record)


@files.get("/{file_id}", response_model=FileObject, responses=_errors(404))
async def retrieve_file(file_id: str, state: AppState, who: Caller) -> FileObject:
    derived = parse_result_file_id(file_id)
    if derived is not None:
        kind, job_id = derived
        return result_file_object(_seen(await _job_of_file(state, who, file_id, job_id), who), kind)
    return file_object(file_of(await state.lifecycle.store.get_file(file_id), who, file_id))


_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}


@files.get("/{file_id}/content", response_class=JsonlStream, responses={
    200: {"content": {"application/jsonl": {"schema": {"type": "string"}}},
          "description": "the file's lines (JSONL), streamed"},
    **{s: {"description": "an error", "content": _JSON_ERROR} for s in (400, 401, 403, 404, 429)}})
async def file_content(file_id: str, state: AppState, who: Caller) -> JsonlStream:
    derived = parse_result_file_id(file_id)
    if derived is not None:
        kind, job_id = derived
        job = await _job_of_file(state, who, file_id, job_id)
        return JsonlStream(_result_lines(state, job, kind, who.public(job.id)))
    file_of(await state.lifecycle.store.get_file(file_id), who, file_id)
    return JsonlStream(_uploaded_lines(state, file_id))


async def _job_of_file(state: State, who: Principal, file_id: str, job_id: str) -> JobRecord:
    """The job behind a batch's output or error file (`job_id`: the id `who` knows it by)."""
    try:
        return await job_of(state.lifecycle, who, job_id)
    except NotFound:
        raise NotFound(f"no file {file_id!r}") from None


async def _result_lines(state: State, job: JobRecord, kind: ResultFile, seen_id: str) -> AsyncIterator[bytes]:
    """The job's `ok` (output) or error results as OpenAI Batch output lines, a store page at a time."""
    store, page_size, retry_s = state.lifecycle.store, state.settings.read_page_items, state.settings.store_retry_s
    model = (batch_of(job) or {}).get("model") or job.model or "unknown"
    created = unix(job.created_at) or 0
    want = ResultStatus.ok if kind == "output" else ResultStatus.error
    after: str | None = None
    while True:
        page = await retrying(lambda after=after: store.results(job.id, after=after, limit=page_size),
                              within_s=retry_s)
        text = "".join(json.dumps(to_openai(r, job_id=seen_id, model=model, created=created), ensure_ascii=False)
                       + "\n" for r in page if r.status == want)
        if text:
            yield text.encode()
        if len(page) < page_size:
            return
        after = page[-1].custom_id


async def _uploaded_lines(state: State, file_id: str) -> AsyncIterator[bytes]:
    store, page_size, retry_s = state.lifecycle.store, state.settings.read_page_items, state.settings.store_retry_s
    start = 0
    while True:
        page = await retrying(lambda start=start: store.read_file_lines(file_id, start_idx=start, limit=page_size),
                              within_s=retry_s)
        text = "".join((json.dumps(rejection_line(r), ensure_ascii=False) if isinstance(r, Rejection)
                        else item_json(r)) + "\n" for r in page)
        if text:
            yield text.encode()
        if len(page) < page_size:
            return
        start += len(page)


# ## Batches

_BATCH_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": BatchIn.model_json_schema()}}}}


@batches.post("", response_model=BatchObject, responses=_errors(404, 413), openapi_extra=_BATCH_BODY)
async def create_batch(request: Request, state: AppState, who: Caller) -> BatchObject:
    """A batch over an uploaded file: an llm-jobs job of its lines, split into shards and dispatched."""
    body = _batch_in(await read_body(request, BATCH_BODY_MAX_BYTES))
    problem = metadata_problem(body.metadata)
    if problem is not None:
        raise InputError([Issue(problem, field="metadata")])
    file_of(await state.lifecycle.store.get_file(body.input_file_id), who, body.input_file_id)
    options = JobOptions(id=_batch_id(request, who), result_format="openai", metadata=batch_fields(
        input_file_id=body.input_file_id, endpoint=body.endpoint, completion_window=body.completion_window,
        metadata=body.metadata, model=await _model_of(state, body.input_file_id)))
    accepted = await state.lifecycle.submit_file(claim(options, who), body.input_file_id)
    return await _batch(request, state, who, who.public(accepted.job.id))


@batches.get("", response_model=BatchList, responses=_errors())
async def list_batches(request: Request, state: AppState, who: Caller,
                       after: Annotated[str | None, Query(description="the last id of the previous page")] = None,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20) -> BatchList:
    found, has_more = await _newest_batches(state, who, after=after, limit=limit)
    data = [_view(request, job, who) for job in found]
    return BatchList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                     has_more=has_more)


@batches.get("/{batch_id}", response_model=BatchObject, responses=_errors(404))
async def retrieve_batch(batch_id: str, request: Request, state: AppState, who: Caller) -> BatchObject:
    return await _batch(request, state, who, batch_id)


@batches.post("/{batch_id}/cancel", response_model=BatchObject, responses=_errors(404))
async def cancel_batch(batch_id: str, request: Request, state: AppState, who: Caller) -> BatchObject:
    """Stop the batch: `cancelling` while it winds down, `cancelled` once it has ended. Stored results stay."""
    job = await _batch_job(state, who, batch_id)
    done = await state.lifecycle.cancel(job.id)
    if not done.record.status.terminal or done.record.status.value == "cancelled":
        cancelling = _cancelling(request)
        cancelling.setdefault(job.id, int(time.time()))
        while len(cancelling) > CANCELLING_MAX:
            cancelling.pop(next(iter(cancelling)))
    return _view(request, done.record, who)


async def _batch_job(state: State, who: Principal, batch_id: str) -> JobRecord:
    try:
        job = await job_of(state.lifecycle, who, batch_id)
    except NotFound:
        job = None
    if job is None or batch_of(job) is None:
        raise NotFound(f"no batch {batch_id!r}")
    return job


async def _batch(request: Request, state: State, who: Principal, batch_id: str) -> BatchObject:
    return _view(request, await _batch_job(state, who, batch_id), who)


def _seen(job: JobRecord, who: Principal) -> JobRecord:
    """The record with the id `who` knows it by (a batch's id, and its files' ids, derive from it)."""
    return job if who.owner is None else job.model_copy(update={"id": who.public(job.id)})


def _batch_id(request: Request, who: Principal) -> str:
    """A new batch id; the same one for the same Idempotency-Key header from the same API key (the openai
    client sends one when asked: `extra_headers`), so a create sent again starts nothing new."""
    key = request.headers.get("idempotency-key")
    if not key:
        return new_batch_id()
    return "batch_" + hashlib.sha256(f"{who.owner or who.who}\0{key}".encode()).hexdigest()[:24]


def _view(request: Request, job: JobRecord, who: Principal) -> BatchObject:
    return batch_object(_seen(job, who), cancelling_at=_cancelling(request).get(job.id))


def _cancelling(request: Request) -> dict[str, int]:
    """batch id -> when this process was asked to cancel it."""
    app_state = request.app.state
    found = getattr(app_state, "llm_jobs_cancelling", None)
    if found is None:
        found = app_state.llm_jobs_cancelling = {}
    return found


async def _newest_batches(state: State, who: Principal, *, after: str | None,
                          limit: int) -> tuple[list[JobRecord], bool]:
    """Up to `limit` of `who`'s batch jobs older than `after` (newest first), and whether there are more."""
    scan = 100
    while True:
        jobs = await state.lifecycle.list(limit=scan, owner=who.owner)
        found = [j for j in jobs if batch_of(j) is not None]
        if after is not None:
            at = next((k for k, j in enumerate(found) if who.public(j.id) == after), None)
            found = found[at + 1:] if at is not None else []
            known = at is not None
        else:
            known = True
        exhausted = len(jobs) < scan or scan >= LIST_SCAN_MAX
        if (known and len(found) > limit) or exhausted:
            return found[:limit], len(found) > limit
        scan = min(scan * 4, LIST_SCAN_MAX)


async def _model_of(state: State, file_id: str) -> str | None:
    """The model the file's first good lines name (`body.model`), for the batch's output lines."""
    rows = await state.lifecycle.store.read_file_lines(file_id, start_idx=0, limit=20)
    return next((r.body["model"] for r in rows if not isinstance(r, Rejection) and r.body
                 and isinstance(r.body.get("model"), str)), None)


def _batch_in(raw: bytes) -> BatchIn:
    try:
        return BatchIn.model_validate_json(raw or b"{}")
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InputError([Issue(err["msg"], field=field)]) from None
