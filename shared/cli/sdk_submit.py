"""`llm-jobs submit --backend http|runpod|modal|local`: the SDK from the command line."""

from __future__ import annotations

import asyncio

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.cli.common import EXIT_ITEMS_FAILED, EXIT_JOB_FAILED, EXIT_OK, err
from shared.contracts.errors import LLMJobsError
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome, ProgressEvent
from shared.contracts.models import Job
from shared.contracts.models import Progress as Counts
from shared.contracts.settings import Settings
from shared.sdk import AsyncClient


def submit_with_sdk(job: Job, backend: str, settings: Settings, *, wait: bool) -> None:
    try:
        final = asyncio.run(_submit(job, backend, settings, wait=wait))
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e
    if final is None:
        return
    failed = final.summary.failed
    err.print(f"job {job.id}: {final.outcome}" + (f", {failed} failed item(s)" if failed else ""))
    if final.outcome is not Outcome.completed:
        raise typer.Exit(EXIT_JOB_FAILED)
    raise typer.Exit(EXIT_ITEMS_FAILED if failed else EXIT_OK)


async def _submit(job: Job, backend: str, settings: Settings, *, wait: bool) -> FinalEvent | None:
    async with AsyncClient(backend, settings=settings) as client:  # type: ignore[arg-type]
        handle = await client.submit(job)
        err.print(f"job {handle.id}: {job.total} item(s) submitted ({backend})")
        print(handle.id, flush=True)
        if not wait:
            return None
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), console=err)
        with bar:
            task = bar.add_task(handle.id, total=job.total, failed=0)
            async for event in handle.stream():
                p = event.progress if isinstance(event, ChunkEvent) else event
                if isinstance(p, Counts | ProgressEvent):
                    bar.update(task, completed=p.completed + p.failed, failed=p.failed)
        return handle.final
