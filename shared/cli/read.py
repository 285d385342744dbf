"""`llm-jobs status` and `llm-jobs results`: read a job back from the store."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, err
from shared.errors import StoreError
from shared.models import JobRecord
from shared.output import result_line
from shared.settings import get_settings
from shared.stores import Store, open_store


def status(job_id: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    job = asyncio.run(_status(job_id))
    table = Table(title=f"job {job.id}", show_header=False)
    done = job.completed + job.failed
    pct = f" ({100 * done / job.total:.1f}%)" if job.total else ""
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
    store = open_store(get_settings())
    try:
        return await _get(store, job_id)
    finally:
        await store.close()


async def _get(store: Store, job_id: str) -> JobRecord:
    try:
        job = await store.get_job(job_id)
    except StoreError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(1) from e
    if job is None:
        err.print(f"[bold red]no job {job_id!r} in the store[/]")
        raise typer.Exit(EXIT_INVALID_INPUT)
    return job


async def _results(job_id: str, output: Path | None, fmt: Literal["ours", "openai"]) -> None:
    store = open_store(get_settings())
    n, after = 0, None
    try:
        job = await _get(store, job_id)
        out = output.open("w", encoding="utf-8") if output else sys.stdout
        while True:
            page = await store.results(job_id, after=after, limit=1000)
            out.write("".join(result_line(r, fmt, job_id=job_id, model=job.model or "") + "\n" for r in page))
            n += len(page)
            if len(page) < 1000:
                break
            after = page[-1].custom_id
        if output:
            out.close()
    finally:
        await store.close()
    if output:
        err.print(f"{n} result(s) of job {job_id} written to {output}")
