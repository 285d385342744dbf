"""Pieces shared by the CLI commands: job options from flags, input loading, error display."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from handler import logs
from shared.contracts.errors import ConfigError, InputError, LLMJobsError
from shared.contracts.inputs import parse_job
from shared.contracts.models import Job
from shared.contracts.prepare import Limits
from shared.contracts.settings import DEFAULT_MODEL_NAME, Settings, get_settings
from shared.contracts.tasks import load_tasks

#: exit codes, documented in the README
EXIT_OK, EXIT_JOB_FAILED, EXIT_INVALID_INPUT, EXIT_ITEMS_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

err = Console(stderr=True)


def setup_logging(settings: Settings) -> None:
    """handler/logs.py's levels and noise filters, through Rich on stderr (progress bars stay whole); with
    LOG_FORMAT=json, JSON lines on stderr and no Rich (a `llm-jobs worker` in a container, read by a log
    shipper)."""
    if settings.log_format == "json":
        logs.setup_logging(settings)
        return
    handler = RichHandler(console=err, show_path=False)
    handler.setFormatter(logs.PlainFormatter("%(message)s"))  # the message, then the ids it does not name
    logs.setup_logging(settings, handler)


def served_models(settings: Settings) -> frozenset[str]:
    """The names OpenAI lines may use, known before the engine boots."""
    names = {settings.served_model_name or settings.model_name or DEFAULT_MODEL_NAME}
    if settings.model_name:
        names.add(settings.model_name)
    return frozenset(names)


def _read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise typer.BadParameter(f"cannot read {what} {path}: {e}") from e


def job_options(*, job_id: str | None, template: Path | None, system: str | None, schema: Path | None,
                json_object: bool, max_tokens: int | None, temperature: float | None, top_p: float | None,
                seed: int | None, chunk_size: int | None, chunk_interval: float | None,
                adapter: str | None = None) -> dict[str, Any]:
    """Job options given on the command line; they override the file's."""
    opts: dict[str, Any] = {"adapter": adapter} if adapter else {}
    if job_id:
        opts["id"] = job_id
    if template:
        opts["template"] = template.read_text(encoding="utf-8")
    if system:
        opts["system"] = system
    if schema:
        doc = _read_json_file(schema, "schema")
        inner = doc.get("schema", doc) if isinstance(doc, dict) else doc
        opts["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": doc.get("name", "output"), "schema": inner}}
    elif json_object:
        opts["response_format"] = {"type": "json_object"}
    sampling = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                                   "seed": seed}.items() if v is not None}
    if sampling:
        opts["sampling"] = sampling
    if chunk_size:
        opts["chunk_size"] = chunk_size
    if chunk_interval:
        opts["chunk_interval_s"] = chunk_interval
    return opts


def load(path: Path, settings: Settings, options: dict[str, Any], *, any_model: bool, strict: bool) -> Job:
    """Parse the input or exit 2 with every issue listed."""
    try:
        return parse_job(path, options=options, limits=Limits.from_settings(settings),
                         served_models=served_models(settings), any_model=any_model, strict=strict,
                         tasks=load_tasks(settings.task_presets))
    except ConfigError as e:  # a task file that does not read
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_INVALID_INPUT) from e
    except InputError as e:
        show_issues(f"{path}: invalid input, nothing was run", [(i.where(), i.message) for i in e.issues])
        raise typer.Exit(EXIT_INVALID_INPUT) from e


def show_issues(title: str, rows: list[tuple[str, str]], limit: int = 20) -> None:
    table = Table(title=title, title_style="bold red", show_lines=False)
    table.add_column("where", style="yellow", no_wrap=True)
    table.add_column("problem")
    for where, message in rows[:limit]:
        table.add_row(where or "job", message)
    if len(rows) > limit:
        table.add_row("...", f"and {len(rows) - limit} more")
    err.print(table)


def show_rejections(job: Job) -> None:
    if job.rejected:
        show_issues(f"{len(job.rejected)} item(s) rejected; each becomes an error result",
                    [(r.where(), r.message) for r in job.rejected])


T = TypeVar("T")


def on_store(call: Callable[[Any], Awaitable[T]]) -> T:
    """`call(store)` on the store the settings name, closed after; a store error exits 1 with its message."""
    from shared.stores import open_store  # the stores' clients: loaded by the commands that use them

    async def go() -> T:
        store = open_store(get_settings())
        try:
            return await call(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e
