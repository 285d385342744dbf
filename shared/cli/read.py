"""`llm-jobs status` and `llm-jobs results`: read a job back from the store."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, err
from shared.cli.output import result_line
from shared.contracts.errors import NotFound, StoreError
from shared.contracts.models import JobRecord
from shared.contracts.settings import get_settings
from shared.server.lifecycle import JobLifecycle
from shared.stores import open_store


def _reader() -> JobLifecycle:
    settings = get_settings()
    return JobLifecycle(open_store(settings), None, settings)


def status(job_id: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    job = asyncio.run(_status(job_id))
    table = Table(title=f"job {job.id}", show_header=False)
    done = job.completed + job.failed
    pct = f" ({job.percentage:.1f}%)" if job.total else ""
    rows = [("status", job.status.value), ("model", job.model or ""), ("items", str(job.total)),
            ("done", f"{done}{pct}"), ("ok", str(job.completed)), ("failed", str(job.failed)),
            ("created", str(job.created_at or "")), ("started", str(job.started_at or "")),
            ("finished", str(job.finished_at or "")), ("error", job.error or "")]
    for k, v in rows:
        table.add_row(k, v)
    err.print(table)


def results(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")] = None,
    format: Annotated[Literal["ours", "openai"], typer.Option("--format")] = "ours",
) -> None:
    asyncio.run(_results(job_id, output, format))


async def _status(job_id: str) -> JobRecord:
    jobs = _reader()
    try:
        return await _get(jobs, job_id)
    finally:
        await jobs.close()


async def _get(jobs: JobLifecycle, job_id: str) -> JobRecord:
    try:
        return await jobs.get(job_id)
    except StoreError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from e
    except NotFound as e:
        err.print(f"[bold red]no job {job_id!r} in the store[/]")
        raise typer.Exit(EXIT_INVALID_INPUT) from e


async def _results(job_id: str, output: Path | None, fmt: Literal["ours", "openai"]) -> None:
    jobs = _reader()
    n, after = 0, None
    try:
        job = await _get(jobs, job_id)
        out = output.open("w", encoding="utf-8") if output else sys.stdout
        while True:
            page, after = await jobs.results(job_id, after=after, limit=1000)
            out.write("".join(result_line(r, fmt, job_id=job_id, model=job.model or "") + "\n" for r in page))
            n += len(page)
            if after is None:
                break
        if output:
            out.close()
    finally:
        await jobs.close()
    if output:
        err.print(f"{n} result(s) of job {job_id} written to {output}")
