"""Read a job from a file, validating everything up front.

Three forms are accepted:
  (a) a Job JSON document: options plus `items`;
  (b) a JSONL file of items, with job options from the caller (the CLI's flags);
  (c) an OpenAI Batch JSONL file: `{custom_id, method, url, body}` per line.

Job-level problems raise InputError and nothing runs. A bad item becomes a Rejection on the
job (an error result when the job runs) unless `strict` is set, when it raises too. A Job
document (the wire format) may carry the `rejected` items of an earlier validation: they stay
rejected.

JSON is read by `shared/contracts/jsontext.py`: bytes that are not UTF-8, JSON nested too deep and
syntax errors are issues naming the line. A document that cannot be decoded is refused whole; a
JSONL line that cannot is a bad item. With `timeout_s`, validation that runs longer is refused
(the API's time budget); the item templates' own budgets are in `shared/contracts/sandbox.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict, Unpack

from pydantic import ValidationError

from shared.contracts.errors import InputError, Issue, ItemFailure, issues_of
from shared.contracts.jsontext import JsonProblem, decode_utf8, loads_document, loads_line
from shared.contracts.models import Item, Job, JobOptions, Rejection
from shared.contracts.prepare import (
    Limits,
    Request,
    RequestBuilder,
    SchemaTooBig,
    TemplateRefused,
    check_schema_size,
    schema_field,
    schema_problem,
)
from shared.contracts.tasks import Task, with_task
from shared.contracts.training import example_issues


def _read_jsonl(text: str) -> list[tuple[int, Any]]:
    """(line number, parsed value or an Issue) for each non-blank line."""
    rows: list[tuple[int, Any]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((n, loads_line(raw, n)))
        except JsonProblem as e:
            rows.append((n, e.issue))
    return rows


def _is_job_document(text: str) -> dict[str, Any] | None:
    """The text as a Job document, or None for JSONL. JSON nested too deep inside a document (in its
    `items`, or past its first line, which a JSONL row cannot be) refuses it, naming the line."""
    try:
        doc = loads_document(text)
    except JsonProblem as e:
        if "nested deeper" in e.issue.message and (e.key == "items" or (e.issue.line or 1) > 1):
            raise InputError([e.issue]) from None
        return None
    return doc if isinstance(doc, dict) and "items" in doc else None


class Checks(TypedDict, total=False):
    """How strictly a job is checked; the same for every input form."""

    limits: Limits
    served_models: frozenset[str]
    any_model: bool
    strict: bool
    #: seconds validation may take; past them InputError (the API's budget). None: no limit
    timeout_s: float | None
    #: the named tasks a job may name, expanded here (the edge); None: a job's `task` is a label only
    tasks: Mapping[str, Task] | None


def parse_job(source: str | Path, *, options: dict[str, Any] | None = None, **checks: Unpack[Checks]) -> Job:
    """Parse and validate a job file. `options` (CLI flags) override the file's job options."""
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError([Issue(f"cannot read {path}: {e}")]) from e
    return parse_job_text(decode_utf8(raw), options=options, **checks)


def parse_job_text(text: str, *, options: dict[str, Any] | None = None, **checks: Unpack[Checks]) -> Job:
    doc = _is_job_document(text)
    if doc is not None:
        return parse_job_document(doc, options=options, **checks)
    rows: list[tuple[int | None, Any]] = list(_read_jsonl(text))
    opts = dict(options or {})
    openai = any(isinstance(v, dict) and "body" in v and "url" in v for _, v in rows[:1])
    if openai:
        opts.setdefault("result_format", "openai")
    return _parse_rows(rows, opts, **checks)


def parse_job_document(doc: Any, *, options: dict[str, Any] | None = None, **checks: Unpack[Checks]) -> Job:
    """Validate a Job document already decoded from JSON (an API body, a platform's job input)."""
    if not isinstance(doc, dict):
        raise InputError([Issue(f"a job must be a JSON object, not {type(doc).__name__}")])
    doc = dict(doc)
    raw_items = doc.pop("items", None)
    if not isinstance(raw_items, list):
        raise InputError([Issue("must be a list of items", field="items")])
    try:
        rejected = [Rejection.model_validate(r) for r in doc.pop("rejected", None) or []]
    except ValidationError as e:
        raise InputError(issues_of(e)) from e
    return _parse_rows([(None, it) for it in raw_items], {**doc, **(options or {})}, rejected=rejected, **checks)


def parse_job_options(doc: dict[str, Any], *, limits: Limits = Limits(), served_models: frozenset[str] = frozenset(),
                      any_model: bool = False, tasks: Mapping[str, Task] | None = None) -> JobOptions:
    """A job's options alone, checked as a job's are (schema caps, the template, the model): for a job
    whose items are staged already (an uploaded file's lines)."""
    doc = with_task(doc, tasks)
    _check_schema_first(doc, limits)
    try:
        opts = JobOptions.model_validate(doc)
    except ValidationError as e:
        raise InputError(issues_of(e)) from e
    RequestBuilder(opts, limits, served_models, any_model=any_model)  # job-level problems: InputError
    return opts


def _parse_rows(
    rows: list[tuple[int | None, Any]],
    opts: dict[str, Any],
    *,
    limits: Limits = Limits(),
    served_models: frozenset[str] = frozenset(),
    any_model: bool = False,
    strict: bool = False,
    timeout_s: float | None = None,
    tasks: Mapping[str, Task] | None = None,
    rejected: list[Rejection] | None = None,
) -> Job:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    opts = with_task(opts, tasks)
    _check_schema_first(opts, limits)
    try:
        job_opts = JobOptions.model_validate(opts)
    except ValidationError as e:
        raise InputError(issues_of(e)) from e
    earlier = rejected or []
    if not rows and not earlier:
        raise InputError([Issue("the job has no items", field="items")])
    if len(rows) + len(earlier) > limits.max_items:
        raise InputError([Issue(f"{len(rows) + len(earlier)} items is over the limit of {limits.max_items}",
                                field="items")])

    if job_opts.training is not None:
        _check_training(job_opts)
    builder = RequestBuilder(job_opts, limits, served_models, any_model=any_model)
    items: list[Item] = []
    requests: dict[str, Request] = {}
    bad: list[tuple[str, Issue]] = []
    seen: dict[str, str] = {}
    dupes: list[Issue] = []
    for n, r in enumerate(earlier):
        if r.custom_id in seen:
            dupes.append(Issue(f"custom_id '{r.custom_id}' repeats {seen[r.custom_id]}",
                               field=f"rejected.{n}.custom_id"))
        seen.setdefault(r.custom_id, f"rejected item {r.index}")
    for index, (line, value) in enumerate(rows):
        if deadline is not None and index % 32 == 0 and time.monotonic() > deadline:
            raise InputError([Issue(f"validation took over {timeout_s:g} s (it had checked {index} of {len(rows)} "
                                    "items): split the job into smaller ones", field="items")])
        custom_id = f"item-{index}"
        if isinstance(value, dict) and isinstance(value.get("custom_id"), str) and value["custom_id"]:
            custom_id = value["custom_id"]
        elif isinstance(value, dict) and "custom_id" not in value:
            value = {"custom_id": custom_id, **value}
        where = f"line {line}" if line is not None else f"item {index}"
        if custom_id in seen:
            dupes.append(Issue(f"custom_id '{custom_id}' repeats {seen[custom_id]}", field="custom_id",
                               index=index, line=line))
            continue
        seen[custom_id] = where
        checked = _check_item(value, builder, index, line, training=job_opts.training is not None)
        if isinstance(checked, Issue):
            bad.append((custom_id, checked))
        else:
            items.append(checked[0])
            if checked[1] is not None:
                requests[custom_id] = checked[1]
    if dupes:
        raise InputError(dupes)
    if strict and bad:
        raise InputError([issue for _, issue in bad])
    refused = [Rejection(custom_id=cid, index=i.index if i.index is not None else -1, line=i.line,
                         field=i.field, code=i.code, message=i.message) for cid, i in bad]
    job = Job(**job_opts.model_dump(by_alias=True), items=items, rejected=[*earlier, *refused])
    job.keep_prepared(builder, requests)
    return job


def _check_schema_first(opts: dict[str, Any], limits: Limits) -> None:
    """A schema over its caps is refused before pydantic copies it (one long C call for 100k properties)."""
    fmt = opts.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if isinstance(schema, dict | list):
        try:
            check_schema_size(schema, limits)
        except SchemaTooBig as e:
            raise InputError([Issue(schema_problem(e), field=schema_field("response_format.json_schema.schema", e))]
                             ) from None


#: options that shape an inference request: a training job has none of them
_INFERENCE_ONLY = ("template", "system", "response_format", "adapter", "task")


def _check_training(opts: JobOptions) -> None:
    """A training job (shared/contracts/training.py) trains on its examples as they are."""
    given = [k for k in _INFERENCE_ONLY if getattr(opts, k) is not None]
    if given:
        raise InputError([Issue(f"a training job takes no '{k}': its examples are the chats it learns from",
                                field=k) for k in given])


def _check_item(value: Any, builder: RequestBuilder, index: int, line: int | None, *, training: bool = False
                ) -> tuple[Item, Request | None] | Issue:
    if isinstance(value, Issue):
        return replace(value, index=index)
    if not isinstance(value, dict):
        return Issue("an item must be a JSON object", index=index, line=line)
    try:
        item = Item.model_validate(value)
    except ValidationError as e:
        return issues_of(e, index=index, line=line)[0]
    if training:  # an example to learn from, never run: a chat that ends with the assistant's turn
        why = example_issues(item)
        return Issue(why, field="messages", index=index, line=line) if why else (item, None)

    try:
        return item, builder.build(item)
    except TemplateRefused as f:
        raise InputError([Issue(f.detail, field=f.field, index=index, line=line, code=f.code)]) from None
    except ItemFailure as f:
        return Issue(f.detail, field=f.field, index=index, line=line, code=f.code)

