"""`llm-jobs submit --backend http|runpod|modal|local`: the SDK from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.cli.common import EXIT_ITEMS_FAILED, EXIT_JOB_FAILED, EXIT_OK, err
from shared.contracts.errors import LLMJobsError
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome, ProgressEvent
from shared.contracts.models import Job
from shared.contracts.models import Progress as Counts
from shared.contracts.settings import Settings
from shared.sdk import AsyncClient


def submit_with_sdk(job: Job | Path, backend: str, settings: Settings, *, wait: bool,
                    options: dict[str, Any] | None = None) -> None:
    """Submit through the SDK. A JSONL Path (the http backend) is streamed to the API, which validates it
    line by line and stages it: the file is never read whole here."""
    try:
        final = asyncio.run(_submit(job, backend, settings, wait=wait, options=options or {}))
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e
    if final is None:
        return
    failed = final.summary.failed
    err.print(f"job {final.job_id}: {final.outcome}" + (f", {failed} failed item(s)" if failed else ""))
    if final.outcome is not Outcome.completed:
        raise typer.Exit(EXIT_JOB_FAILED)
    raise typer.Exit(EXIT_ITEMS_FAILED if failed else EXIT_OK)


async def _submit(job: Job | Path, backend: str, settings: Settings, *, wait: bool,
                  options: dict[str, Any]) -> FinalEvent | None:
    async with AsyncClient(backend, settings=settings) as client:  # type: ignore[arg-type]
        handle = await client.submit(job, **options)
        total = job.total if isinstance(job, Job) else handle.submitted.get("total", 0)
        err.print(f"job {handle.id}: {total} item(s) submitted ({backend})")
        print(handle.id, flush=True)
        if not wait:
            return None
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), console=err)
        with bar:
            task = bar.add_task(handle.id, total=total, failed=0)
            async for event in handle.stream():
                p = event.progress if isinstance(event, ChunkEvent) else event
                if isinstance(p, Counts | ProgressEvent):
                    bar.update(task, completed=p.completed + p.failed, failed=p.failed)
        return handle.final
