"""Named tasks: server-side presets of a job's options, so that clients send only records (issue 15).

A task is a YAML or JSON file in TASKS_DIR (`tasks/*.yaml`): an id, a description, and any job
options (system prompt, template, response format, sampling, model, chunking, metadata). A job
that names a task (`"task": "grade-ca"`) gets the task's options under its own: an option the job
sets wins, and `sampling` and `metadata` are merged key by key. The job keeps the task's name, so
the store records which task made it.

Only the edge expands a task (the API, the CLI, the SDK's local and http backends: they pass
`tasks` to the parse functions, shared/contracts/inputs.py). A worker reads a job that was
expanded already: its `task` is a label there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2.sandbox
import yaml
from jinja2 import meta
from pydantic import Field, ValidationError

from shared.contracts.errors import ConfigError, InputError, Issue, issues_of
from shared.contracts.models import ID_PATTERN, JobOptions, _Strict
from shared.contracts.prepare import Limits, RequestBuilder

#: the most a task file may be
MAX_TASK_BYTES = 1024 * 1024
#: the options a task may not set: they belong to each job
PER_JOB = frozenset({"id", "owner", "priority", "task"})
#: options merged key by key (the job's keys win)
MERGED = ("sampling", "metadata")


class Task(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    description: str = Field(default="", max_length=2000)
    #: job options (JobOptions' fields but id, owner, priority and task), checked when the file is read
    options: dict[str, Any]

    def fields(self) -> list[str]:
        """The names its template reads from an item's `fields`, sorted (none without a template)."""
        template = self.options.get("template")
        if not isinstance(template, str):
            return []
        env = jinja2.sandbox.ImmutableSandboxedEnvironment()
        return sorted(meta.find_undeclared_variables(env.parse(template)))


def task_of(doc: Any) -> Task:
    """A task from a decoded file; InputError naming the field."""
    if not isinstance(doc, dict):
        raise InputError([Issue("a task is a mapping with `id` and job options")])
    doc = dict(doc)
    head = {k: doc.pop(k) for k in ("id", "description") if k in doc}
    if taken := sorted(PER_JOB & set(doc)):
        raise InputError([Issue(f"a task cannot set {', '.join(taken)} (each job's own)", field=taken[0])])
    try:
        # options a job could have, with its template and schema compiled as a job's are
        RequestBuilder(JobOptions.model_validate(doc), Limits(), frozenset(), any_model=True)
        return Task.model_validate({**head, "options": doc})
    except ValidationError as e:
        raise InputError(issues_of(e)) from None


def load_tasks(directory: Path | None) -> dict[str, Task]:
    """Every task in `directory` (`*.yaml`, `*.yml`, `*.json`), by id; {} when there is none. A file that is
    not a valid task, or two with one id, stop the start: ConfigError naming the file and the field."""
    if directory is None or not directory.is_dir():
        return {}
    tasks: dict[str, Task] = {}
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".json")):
        try:
            if path.stat().st_size > MAX_TASK_BYTES:
                raise InputError([Issue(f"{path}: over {MAX_TASK_BYTES} bytes")])
            task = task_of(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"task file {path}: {e}") from None
        except InputError as e:
            raise ConfigError(f"task file {path}: " + "; ".join(f"{i.field}: {i.message}" if i.field else i.message
                                                              for i in e.issues)) from None
        if task.id in tasks:
            raise ConfigError(f"task file {path}: task id {task.id!r} is taken by another file")
        tasks[task.id] = task
    return tasks


def with_task(opts: dict[str, Any], tasks: Mapping[str, Task] | None) -> dict[str, Any]:
    """A job's options with its task's under them (`tasks` None: not expanded here, see the module docstring)."""
    name = opts.get("task")
    if tasks is None or name is None:
        return opts
    task = tasks.get(name) if isinstance(name, str) else None
    if task is None:
        known = ", ".join(sorted(tasks)) or "none"
        raise InputError([Issue(f"no task {str(name)[:100]!r} here (tasks: {known})", field="task")])
    merged = {**task.options, **opts}
    for key in MERGED:
        base, own = task.options.get(key), opts.get(key)
        if isinstance(base, dict) and isinstance(own, dict):
            merged[key] = {**base, **own}
    return merged
