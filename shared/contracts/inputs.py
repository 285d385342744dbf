"""Read a job from a file, validating everything up front.

Three forms are accepted:
  (a) a Job JSON document: options plus `items`;
  (b) a JSONL file of items, with job options from the caller (the CLI's flags);
  (c) an OpenAI Batch JSONL file: `{custom_id, method, url, body}` per line.

Job-level problems raise InputError and nothing runs. A bad item becomes a Rejection on the
job (an error result when the job runs) unless `strict` is set, when it raises too. A Job
document (the wire format) may carry the `rejected` items of an earlier validation: they stay
rejected.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict, Unpack

from pydantic import ValidationError

from shared.contracts.errors import InputError, Issue, ItemFailure
from shared.contracts.models import Item, Job, JobOptions, Rejection
from shared.contracts.prepare import Limits, Request, RequestBuilder


def _issues(e: ValidationError, *, index: int | None = None, line: int | None = None) -> list[Issue]:
    out = []
    for err in e.errors():
        field = ".".join(str(p) for p in err["loc"])
        out.append(Issue(err["msg"], field=field, index=index, line=line))
    return out


def _read_jsonl(text: str) -> list[tuple[int, Any]]:
    """(line number, parsed value or an Issue) for each non-blank line."""
    rows: list[tuple[int, Any]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((n, json.loads(raw)))
        except json.JSONDecodeError as e:
            rows.append((n, Issue(f"not valid JSON: {e.msg} (column {e.colno})", line=n)))
    return rows


def _is_job_document(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "items" in doc else None


class Checks(TypedDict, total=False):
    """How strictly a job is checked; the same for every input form."""

    limits: Limits
    served_models: frozenset[str]
    any_model: bool
    strict: bool


def parse_job(source: str | Path, *, options: dict[str, Any] | None = None, **checks: Unpack[Checks]) -> Job:
    """Parse and validate a job file. `options` (CLI flags) override the file's job options."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError([Issue(f"cannot read {path}: {e}")]) from e
    return parse_job_text(text, options=options, **checks)


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
        raise InputError(_issues(e)) from e
    return _parse_rows([(None, it) for it in raw_items], {**doc, **(options or {})}, rejected=rejected, **checks)


def _parse_rows(
    rows: list[tuple[int | None, Any]],
    opts: dict[str, Any],
    *,
    limits: Limits = Limits(),
    served_models: frozenset[str] = frozenset(),
    any_model: bool = False,
    strict: bool = False,
    rejected: list[Rejection] | None = None,
) -> Job:
    try:
        job_opts = JobOptions.model_validate(opts)
    except ValidationError as e:
        raise InputError(_issues(e)) from e
    earlier = rejected or []
    if not rows and not earlier:
        raise InputError([Issue("the job has no items", field="items")])
    if len(rows) + len(earlier) > limits.max_items:
        raise InputError([Issue(f"{len(rows) + len(earlier)} items is over the limit of {limits.max_items}",
                                field="items")])

    builder = RequestBuilder(job_opts, limits, served_models, any_model=any_model)
    items: list[Item] = []
    requests: dict[str, Request] = {}
    bad: list[tuple[str, Issue]] = []
    seen: dict[str, str] = {r.custom_id: f"rejected item {r.index}" for r in earlier}
    dupes: list[Issue] = []
    for index, (line, value) in enumerate(rows):
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
        checked = _check_item(value, builder, index, line)
        if isinstance(checked, Issue):
            bad.append((custom_id, checked))
        else:
            items.append(checked[0])
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


def _check_item(value: Any, builder: RequestBuilder, index: int, line: int | None) -> tuple[Item, Request] | Issue:
    if isinstance(value, Issue):
        return replace(value, index=index)
    if not isinstance(value, dict):
        return Issue("an item must be a JSON object", index=index, line=line)
    try:
        item = Item.model_validate(value)
    except ValidationError as e:
        return _issues(e, index=index, line=line)[0]

    try:
        return item, builder.build(item)
    except ItemFailure as f:
        return Issue(f.detail, field=f.field, index=index, line=line, code=f.code)

