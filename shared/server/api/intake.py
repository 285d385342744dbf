"""Validate a submitted job off the event loop, within a time budget.

Parsing, rendering every item's template and compiling schemas are CPU work: run on the event
loop, one heavy request froze every other one, `/healthz` included, for seconds. Here that work runs
in a worker thread:

- at most `validation_concurrency` jobs are validated at once; more wait their turn (they do not
  pile up threads);
- a job still validating after `validation_timeout_s` is refused (422, "validation took over N s").
  The budget is checked between items, so the thread stops soon after it; each item's own work is
  bounded by its template's budget and the schema caps.

A thread is enough because the work is pure Python (which gives up the GIL every few milliseconds)
or short C calls: documents are decoded element by element (`shared/contracts/jsontext.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from anyio import to_thread

from shared.contracts.errors import InputError, Issue
from shared.contracts.inputs import parse_job_document, parse_job_options, parse_job_text
from shared.contracts.jsontext import JsonProblem, decode_utf8, loads_document
from shared.contracts.models import Job, JobOptions, new_job_id
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings
from shared.contracts.tasks import Task

T = TypeVar("T")


def is_jsonl(content_type: str) -> bool:
    return "jsonl" in content_type or "ndjson" in content_type or "json" not in content_type


@dataclass(frozen=True, slots=True)
class FileJob:
    """A job whose items are an uploaded file's lines: `{"input_file_id": "file-...", ...options}`."""

    options: JobOptions
    file_id: str


def parse_body(raw: bytes, content_type: str, limits: Limits, *, job_id: str | None, strict: bool,
               timeout_s: float | None = None, tasks: Mapping[str, Task] | None = None,
               task: str | None = None) -> Job | FileJob:
    """A request body as a validated Job: a Job document (JSON), or items / OpenAI Batch lines (JSONL)
    whose id (the idempotency key) comes from `job_id` and whose task from `task`; or the options of a
    job of an uploaded file (a JSON document with `input_file_id` and no items). A named task's options
    go under the job's (`tasks`). Raises InputError naming every problem."""
    text = decode_utf8(raw)
    checks: dict[str, Any] = {"limits": limits, "any_model": True, "strict": strict, "timeout_s": timeout_s,
                              "tasks": tasks}
    if not is_jsonl(content_type):
        try:
            doc = loads_document(text)
        except JsonProblem as e:
            raise InputError([e.issue]) from None
        if isinstance(doc, dict) and not doc.get("id"):
            doc = {**doc, "id": job_id or new_job_id()}
        if isinstance(doc, dict) and "input_file_id" in doc:
            return _file_job(doc, limits, tasks)
        return parse_job_document(doc, **checks)
    options = {"id": job_id or new_job_id(), **({"task": task} if task else {})}
    return parse_job_text(text, options=options, **checks)


def _file_job(doc: dict[str, Any], limits: Limits, tasks: Mapping[str, Task] | None) -> FileJob:
    doc = dict(doc)
    file_id = doc.pop("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InputError([Issue("must be the id of an uploaded file (POST /v1/files)", field="input_file_id")])
    if "items" in doc or "rejected" in doc:
        raise InputError([Issue("a job takes its items from `items` or from `input_file_id`, not both",
                                field="items")])
    return FileJob(parse_job_options(doc, limits=limits, any_model=True, tasks=tasks), file_id)


class Intake:
    """Validates submitted jobs in worker threads, a few at a time, each within the time budget."""

    def __init__(self, settings: Settings, limits: Limits, tasks: Mapping[str, Task] | None = None):
        self.limits, self.tasks = limits, tasks
        self.timeout_s = settings.validation_timeout_s
        self._slots = anyio.CapacityLimiter(settings.validation_concurrency)

    async def parse(self, raw: bytes, content_type: str, *, job_id: str | None, strict: bool,
                    task: str | None = None) -> Job | FileJob:
        return await self.run(lambda: parse_body(raw, content_type, self.limits, job_id=job_id, strict=strict,
                                                 timeout_s=self.timeout_s, tasks=self.tasks, task=task))

    async def run(self, check: Callable[[], T]) -> T:
        """`check()` in a worker thread, when one of the slots is free (a suite's validation, say)."""
        return await to_thread.run_sync(check, limiter=self._slots)


def intake_of(app_state: Any, settings: Settings, limits: Limits,
              tasks: Mapping[str, Task] | None = None) -> Intake:
    """The app's Intake, made on first use (its limiter belongs to the running event loop)."""
    intake = getattr(app_state, "llm_jobs_intake", None)
    if intake is None:
        intake = app_state.llm_jobs_intake = Intake(settings, limits, tasks)
    return intake
