"""OpenAI's Files and Batches API, as views of our own records (layer 1: no I/O).

    file_object(FileRecord) -> FileObject                 GET /v1/files/{id}
    result_file_object(JobRecord, "output") -> FileObject  a batch's output (or error) file
    batch_object(JobRecord) -> BatchObject                 GET /v1/batches/{id}
    check_lines(lines, ...) -> [Item | Rejection]          one batch of an uploaded file's lines

**A batch is a job.** `POST /v1/batches` starts an llm-jobs job (id `batch_<24 hex>`,
`result_format="openai"`) over the uploaded file's lines; `/v1/jobs/{id}` shows it too. The batch's own
fields (`input_file_id`, `endpoint`, `completion_window`, OpenAI `metadata`, and the first line's
`body.model`) are kept in the job's metadata under one reserved key, `BATCH_KEY` ("_openai_batch"):
a job whose metadata has it is a batch. The status maps from the job's (`batch_status`).

**Output and error files are derived, never stored**: `file-out-<job id>` is every `ok` result of the
job as an OpenAI Batch output line (`to_openai`), `file-err-<job id>` every error result (the lines
refused at upload among them, naming the line and the field). They are set on the batch once it has
such lines, so a client that reads them before the batch has ended sees the lines so far.

**Uploaded lines** are checked as items of a job with no options (`RequestBuilder(JobOptions())`): the
item's shape, its OpenAI body, its sampling and prompt limits. An item with `fields` needs the job's
template, which comes later (`POST /v1/jobs` with `input_file_id`): only its shape is checked here, and
the runner renders it. A bad line becomes a `Rejection` naming the line and the field, and later an
error result; a custom_id used twice refuses the whole file (`InputError` naming both lines).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from shared.contracts.errors import InputError, Issue
from shared.contracts.files import FileRecord
from shared.contracts.inputs import _check_item, issues_of
from shared.contracts.jsontext import JsonProblem, decode_utf8, loads_line
from shared.contracts.models import Item, JobRecord, JobStatus, Rejection
from shared.contracts.prepare import RequestBuilder

#: the reserved key of a job's metadata that makes it a batch, and holds the batch's own fields
BATCH_KEY = "_openai_batch"
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOWS = ("24h",)
#: seconds in a completion window ("24h"): a batch's `expires_at` (we never expire one)
WINDOW_S = 24 * 3600
#: OpenAI's limits on a batch's metadata
METADATA_MAX_KEYS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512

OUTPUT_PREFIX, ERROR_PREFIX = "file-out-", "file-err-"

BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
ResultFile = Literal["output", "error"]


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:24]}"


def result_file_id(job_id: str, kind: ResultFile) -> str:
    """The id of a job's output file (its `ok` results) or error file (its error results)."""
    return f"{OUTPUT_PREFIX if kind == 'output' else ERROR_PREFIX}{job_id}"


def parse_result_file_id(file_id: str) -> tuple[ResultFile, str] | None:
    """("output" | "error", job id) for a derived file's id; None for any other id (an uploaded file's)."""
    for prefix, kind in ((OUTPUT_PREFIX, "output"), (ERROR_PREFIX, "error")):
        if file_id.startswith(prefix) and len(file_id) > len(prefix):
            return kind, file_id[len(prefix):]  # type: ignore[return-value]
    return None


def unix(at: datetime | None) -> int | None:
    """Unix seconds (a naive datetime is UTC, as the stores write it)."""
    if at is None:
        return None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


# ## Files


class FileObject(BaseModel):
    """OpenAI's File object."""

    id: str
    object: Literal["file"] = "file"
    #: the upload's size; 0 for a batch's output and error files, whose size is known only once read
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None


def file_object(rec: FileRecord) -> FileObject:
    return FileObject(id=rec.id, bytes=rec.bytes, created_at=unix(rec.created_at) or int(time.time()),
                      filename=rec.filename, purpose=rec.purpose, status=rec.status, status_details=rec.status_details)


def result_file_object(job: JobRecord, kind: ResultFile) -> FileObject:
    """A job's output or error file: "processed" once the job has ended, "uploaded" while lines still come."""
    ended = job.status.terminal
    return FileObject(id=result_file_id(job.id, kind), bytes=0,
                      created_at=unix(job.finished_at if ended else None) or unix(job.created_at) or 0,
                      filename=f"{job.id}_{kind}.jsonl", purpose="batch_output",
                      status="processed" if ended else "uploaded")


# ## Batches


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})


class BatchObject(BaseModel):
    """OpenAI's Batch object."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None = None
    errors: BatchErrors | None = None
    model: str | None = None
    #: the tokens of the results stored so far
    usage: BatchUsage | None = None


class BatchList(BaseModel):
    """OpenAI's list shape: newest first; pass `last_id` as `after` for the next page."""

    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


def batch_fields(*, input_file_id: str, endpoint: str, completion_window: str,
                 metadata: dict[str, str] | None, model: str | None) -> dict[str, Any]:
    """What a batch keeps in its job's metadata, under BATCH_KEY."""
    return {BATCH_KEY: {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": completion_window,
                        "metadata": metadata, "model": model}}


def batch_of(job: JobRecord) -> dict[str, Any] | None:
    """The batch's own fields, or None: the job is not a batch."""
    fields = job.metadata.get(BATCH_KEY)
    return fields if isinstance(fields, dict) else None


def metadata_problem(metadata: dict[str, Any] | None) -> str | None:
    """Why OpenAI would refuse this batch metadata (16 string pairs, keys up to 64 and values up to 512
    characters), or None."""
    if metadata is None:
        return None
    if len(metadata) > METADATA_MAX_KEYS:
        return f"at most {METADATA_MAX_KEYS} keys, not {len(metadata)}"
    for k, v in metadata.items():
        if len(k) > METADATA_MAX_KEY:
            return f"key {k[:80]!r} is over {METADATA_MAX_KEY} characters"
        if not isinstance(v, str) or len(v) > METADATA_MAX_VALUE:
            return f"the value of {k!r} must be a string of at most {METADATA_MAX_VALUE} characters"
    return None


def batch_status(job: JobRecord, *, cancelling: bool = False) -> BatchStatus:
    """queued and never started: validating; running: in_progress (finalizing once every line has a result;
    cancelling once a cancel was asked for); then completed, failed or cancelled."""
    match job.status:
        case JobStatus.completed:
            return "completed"
        case JobStatus.failed:
            return "failed"
        case JobStatus.cancelled:
            return "cancelled"
    if cancelling:
        return "cancelling"
    if job.status == JobStatus.queued and job.started_at is None:
        return "validating"
    if job.total and job.completed + job.failed >= job.total:
        return "finalizing"
    return "in_progress"


def batch_object(job: JobRecord, *, cancelling_at: int | None = None) -> BatchObject:
    """The job as OpenAI's Batch object. `cancelling_at`: when this API was asked to cancel it (None: not)."""
    fields = batch_of(job) or {}
    status = batch_status(job, cancelling=cancelling_at is not None)
    created = unix(job.created_at) or 0
    finished = unix(job.finished_at)
    errors = None
    if job.status == JobStatus.failed:
        errors = BatchErrors(data=[BatchError(code="batch_failed", message=job.error or "the batch failed")])
    p, c = job.prompt_tokens, job.completion_tokens  # counted by the store as results are written
    usage = BatchUsage(input_tokens=p, output_tokens=c, total_tokens=p + c)
    return BatchObject(
        id=job.id, endpoint=fields.get("endpoint") or ENDPOINTS[0], input_file_id=fields.get("input_file_id") or "",
        completion_window=fields.get("completion_window") or COMPLETION_WINDOWS[0], status=status,
        output_file_id=result_file_id(job.id, "output") if job.completed else None,
        error_file_id=result_file_id(job.id, "error") if job.failed else None,
        created_at=created, in_progress_at=unix(job.started_at), expires_at=created + WINDOW_S,
        finalizing_at=finished if status == "completed" else None,
        completed_at=finished if status == "completed" else None,
        failed_at=finished if status == "failed" else None,
        cancelling_at=cancelling_at if status in ("cancelling", "cancelled") else None,
        cancelled_at=finished if status == "cancelled" else None,
        request_counts=BatchRequestCounts(total=job.total, completed=job.completed, failed=job.failed),
        metadata=fields.get("metadata"), errors=errors, model=fields.get("model") or job.model, usage=usage)


# ## Uploaded lines

#: a line of an uploaded file as read: (line number, its bytes; None for a line over the length cap)
RawLine = tuple[int, bytes | None]


def check_lines(lines: Sequence[RawLine], *, start_idx: int, builder: RequestBuilder, seen: dict[str, int],
                max_line_bytes: int, deadline: float | None = None) -> list[Item | Rejection]:
    """One batch of an uploaded file's non-blank lines, each an Item or a Rejection (staged at idx
    start_idx, start_idx + 1, ...). `seen` maps every custom_id so far to its line, across batches: a
    custom_id used again raises InputError naming both lines. Past `deadline` (time.monotonic()),
    InputError. CPU work: run it in a worker thread."""
    out: list[Item | Rejection] = []
    for k, (line, raw) in enumerate(lines):
        if deadline is not None and k % 32 == 0 and time.monotonic() > deadline:
            raise InputError([Issue(f"validating lines took too long (at line {line}): split the file into "
                                    "smaller ones", field="file", line=line)])
        row = check_line(raw, line, start_idx + k, builder, max_line_bytes=max_line_bytes)
        first = seen.get(row.custom_id)
        if first is not None:
            raise InputError([Issue(f"custom_id {row.custom_id!r} repeats line {first}: each line needs its own "
                                    "custom_id", field="custom_id", line=line)])
        seen[row.custom_id] = line
        out.append(row)
    return out


def check_line(raw: bytes | None, line: int, index: int, builder: RequestBuilder, *,
               max_line_bytes: int) -> Item | Rejection:
    """One line as an Item, or a Rejection naming the line and the field. A line with no usable custom_id
    gets `item-<index>`, as a JSONL job's do (shared/contracts/inputs.py)."""
    fallback = f"item-{index}"
    if raw is None:
        return _refused(fallback, index, Issue(f"the line is over {max_line_bytes} bytes", line=line))
    try:
        text = decode_utf8(raw)
        value = loads_line(text, line)
    except InputError as e:  # not UTF-8: decode_utf8 counts lines within the line
        issue = e.issues[0]
        return _refused(fallback, index, Issue(issue.message, field=issue.field, line=line))
    except JsonProblem as e:
        return _refused(fallback, index, e.issue)
    custom_id = fallback
    if isinstance(value, dict):
        cid = value.get("custom_id")
        if isinstance(cid, str) and 1 <= len(cid) <= 256:
            custom_id = cid
        elif "custom_id" not in value:
            value = {"custom_id": custom_id, **value}
    if isinstance(value, dict) and value.get("fields") is not None and builder.template is None:
        # its template comes with the job (POST /v1/jobs with input_file_id): the shape only, here
        try:
            return Item.model_validate(value)
        except ValidationError as e:
            return _refused(custom_id, index, issues_of(e, index=index, line=line)[0])
    checked = _check_item(value, builder, index, line)
    if isinstance(checked, Issue):
        return _refused(custom_id, index, checked)
    return checked[0]


def _refused(custom_id: str, index: int, issue: Issue) -> Rejection:
    return Rejection(custom_id=custom_id, index=index, line=issue.line, field=issue.field, code=issue.code,
                     message=issue.message)


def rejection_line(r: Rejection) -> dict[str, Any]:
    """A refused line as an uploaded file's content shows it (the original text is not kept)."""
    return {"custom_id": r.custom_id, "error": {"code": str(r.code), "message": r.message, "line": r.line,
                                                "field": r.field or None}}
