"""`llm-jobs submit | watch | worker | queue ...`: the Upstash queue from the command line."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.cli.common import EXIT_ITEMS_FAILED, EXIT_JOB_FAILED, EXIT_OK, err, job_options, load, setup_logging
from shared.contracts.errors import LLMJobsError, NotFound, QueueError
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome, ProgressEvent
from shared.contracts.models import Job
from shared.contracts.settings import Settings, get_settings
from shared.queue.upstash import JobQueue, Priority
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import Accepted, Cancelled, JobLifecycle
from shared.stores import open_store

T = TypeVar("T")
queue_app = typer.Typer(help="Inspect and repair the job queue.", no_args_is_help=True)


def _queue(settings: Settings) -> JobQueue:
    try:
        return JobQueue.from_settings(settings)
    except QueueError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e


def _run(coro):
    try:
        return asyncio.run(coro)
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e


def _on_queue(call: Callable[[JobQueue], Awaitable[T]], settings: Settings | None = None) -> T:
    """Open the queue, make one call, close it; a queue error exits with its message."""
    async def go() -> T:
        q = _queue(settings or get_settings())
        try:
            return await call(q)
        finally:
            await q.close()

    return _run(go())


def submit(
    input: Annotated[Path, typer.Argument(help="Job JSON, items JSONL or OpenAI Batch JSONL.", exists=True,
                                          dir_okay=False)],
    priority: Annotated[Literal["high", "default"], typer.Option(
        help="high: its shards are taken before default ones (every backend that queues).")] = "default",
    job_id: Annotated[str | None, typer.Option(help="Job id (the idempotency key).")] = None,
    template: Annotated[Path | None, typer.Option(help="Jinja2 template file over item fields.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    schema: Annotated[Path | None, typer.Option(help="JSON schema file: structured output.")] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    chunk_size: Annotated[int | None, typer.Option()] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter for every item that names none (`llm-jobs "
                                                     "adapters list`).")] = None,
    backend: Annotated[Literal["queue", "http", "runpod", "modal", "local"], typer.Option(
        help="queue: the Upstash queue; http: our API (API_URL); runpod: RUNPOD_ENDPOINT_ID; modal: the "
             "deployed app; local: an engine here. All but queue go through the SDK.")] = "queue",
    wait: Annotated[bool, typer.Option(help="Follow the job to its end (always on for local).")] = False,
) -> None:
    settings = get_settings()
    opts = job_options(job_id=job_id, template=template, system=system, schema=schema, json_object=False,
                       max_tokens=max_tokens, temperature=None, top_p=None, seed=None, chunk_size=chunk_size,
                       chunk_interval=None, adapter=adapter)
    if backend == "http" and input.suffix.lower() in (".jsonl", ".ndjson"):
        from shared.cli.sdk_submit import submit_with_sdk

        # streamed to POST /v1/files and validated there line by line: never read whole here
        submit_with_sdk(input, backend, settings, wait=wait, options={**opts, "priority": priority})
        return
    job = load(input, settings, opts, any_model=backend != "queue", strict=backend != "queue")
    if backend != "queue":
        from shared.cli.sdk_submit import submit_with_sdk

        high = {"priority": "high"} if priority == "high" else None  # none: the validated job goes as it is
        submit_with_sdk(job, backend, settings, wait=wait or backend == "local", options=high)
        return

    accepted = _run(_submit(job, settings, priority))
    err.print(f"job {job.id}: {job.total} item(s) " + ("queued" if accepted.dispatched else
              f"already known ({accepted.status}): not queued again") + f" ({priority})")
    print(job.id)


def _lifecycle(settings: Settings, **queue_options: Any) -> JobLifecycle:
    return JobLifecycle(open_store(settings), QueueDispatcher(_queue(settings), **queue_options), settings)


async def _submit(job: Job, settings: Settings, priority: Priority) -> Accepted:
    jobs = _lifecycle(settings, priority=priority)
    try:
        return await jobs.submit(job)
    finally:
        await jobs.close()


def watch(job_id: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Follow a job's events (from its Redis stream, then the store) until its final event."""
    final = _run(_watch(_lifecycle(get_settings()), job_id))
    failed = final.summary.failed
    err.print(f"job {job_id}: {final.outcome}" + (f", {failed} failed item(s)" if failed else ""))
    if final.outcome is not Outcome.completed:
        raise typer.Exit(EXIT_JOB_FAILED)
    raise typer.Exit(EXIT_ITEMS_FAILED if failed else EXIT_OK)


async def _watch(jobs: JobLifecycle, job_id: str) -> FinalEvent:
    """One bar for the job and, for a job of several shards, one per shard while it runs (a shard's
    chunk events carry its own progress; the job's bar adds them up)."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[red]{task.fields[failed]} failed"), TextColumn("ETA {task.fields[eta]}"),
                   TimeElapsedColumn(), console=err)
    shards: dict[int, tuple[int, int]] = {}  # shard -> (done, failed), from its latest chunk
    rows: dict[int, TaskID] = {}
    try:
        with bar:
            try:  # the job's size and what is stored already (the events may come before the store has it)
                record = await jobs.get(job_id)
                total, done, failed = record.total or None, record.completed + record.failed, record.failed
            except NotFound:
                total, done, failed = None, 0, 0
            task = bar.add_task(job_id, total=total, completed=done, failed=failed, eta="?")
            async for ev in jobs.follow(job_id):
                match ev.event:
                    case FinalEvent() as final:
                        return final
                    case ChunkEvent(progress=p, shard=int(k), shards=int(n)):
                        shards[k] = (p.completed + p.failed, p.failed)
                        if k not in rows:
                            rows[k] = bar.add_task(f"  shard {k + 1}/{n}", total=p.total, failed=0, eta="?")
                        bar.update(rows[k], completed=p.completed + p.failed, failed=p.failed,
                                   eta="?" if p.eta_s is None else f"{p.eta_s:.0f}s")
                        if p.completed + p.failed >= p.total:
                            bar.remove_task(rows.pop(k))  # done: keep the screen to the shards that run
                        bar.update(task, completed=sum(d for d, _ in shards.values()),
                                   failed=sum(f for _, f in shards.values()))
                    case ChunkEvent(progress=p):
                        bar.update(task, total=p.total, completed=p.completed + p.failed, failed=p.failed,
                                   eta="?" if p.eta_s is None else f"{p.eta_s:.0f}s")
                    case ProgressEvent() as p:
                        bar.update(task, total=p.total, completed=p.completed + p.failed, failed=p.failed)
        raise AssertionError("a followed job ends with its final event")
    finally:
        await jobs.close()


def worker(
    drain: Annotated[bool, typer.Option(help="Exit when the queue is empty (for Cron).")] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once on the one engine.")] = 2,
    lease_s: Annotated[float | None, typer.Option(help="Lease seconds [default: LEASE_S].")] = None,
    worker_id: Annotated[str | None, typer.Option(help="[default: host-pid]")] = None,
    train_only: Annotated[bool, typer.Option(help="Run only training jobs (the queue's train lane): no engine "
                                                  "boots. A GPU training box.")] = False,
    metrics_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Serve Prometheus metrics (this "
                                                     "worker's items and vLLM's vllm:*) at /metrics on this port, "
                                                     "on METRICS_HOST; no auth. Default: METRICS_PORT (none).")] = None,
) -> None:
    """Boot the engine once, then take jobs from the queue and run them into the store. With TRAIN_JOBS on
    (the default), training jobs too."""
    settings = get_settings()
    setup_logging(settings)
    server = _serve_metrics(settings.metrics_host, metrics_port or settings.metrics_port)
    try:
        stats = asyncio.run(_work(settings, drain=drain, concurrency=concurrency,
                                  lease_s=lease_s or settings.lease_s, worker_id=worker_id, train_only=train_only))
    finally:
        if server is not None:
            server.shutdown()
    raise typer.Exit(EXIT_JOB_FAILED if stats is None else EXIT_OK)


def _serve_metrics(host: str, port: int | None) -> Any:
    """prometheus-client's own HTTP server, in a daemon thread, over the process's default registry: what the
    runner counts (shared/observability/metrics.py) and vLLM's `vllm:*` once the engine is up. A worker has no
    store-wide figures: the API's /metrics has those. None when no port is set; a port taken exits 2."""
    if port is None:
        return None
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as e:
        err.print(f"[bold red]error:[/] cannot serve metrics on {host}:{port}: {e}")
        raise typer.Exit(2) from e
    err.print(f"metrics on http://{host}:{port}/metrics")
    return server


async def _work(settings: Settings, *, drain: bool, concurrency: int, lease_s: float, worker_id: str | None,
                train_only: bool = False):
    from handler.engine.vllm_engine import VLLMEngine
    from handler.training.run import Trainer
    from handler.worker import Worker
    from shared.contracts.prepare import Limits
    from shared.server.dispatch import QueueDispatcher
    from shared.server.lifecycle import JobLifecycle
    from shared.server.scheduler import tick, tick_every

    q = _queue(settings)
    store = open_store(settings)
    train_only = train_only or not settings.inference_jobs
    engine = None if train_only else await VLLMEngine.start(settings)
    trainer = Trainer(settings) if train_only or settings.train_jobs else None
    w = Worker(engine, q, store, worker_id=worker_id, concurrency=concurrency, lease_s=lease_s, drain=drain,
               limits=Limits.from_settings(settings), store_retry_s=settings.store_retry_s,
               page_items=settings.read_page_items, chunk_size=settings.default_chunk_size,
               chunk_interval_s=settings.default_chunk_interval_s, trainer=trainer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.stop)
    ticks = None
    if settings.schedule_tick_s > 0:  # scheduled eval runs: any number of workers may tick, one run per slot
        lifecycle = JobLifecycle(store, QueueDispatcher(q), settings)
        if drain:
            await tick(lifecycle)  # once, then the queue is run dry (with what it just submitted)
        else:
            ticks = asyncio.create_task(tick_every(lifecycle, settings.schedule_tick_s))
    try:
        stats = await w.run()
    finally:
        if ticks is not None:
            ticks.cancel()
            await asyncio.gather(ticks, return_exceptions=True)
        await store.close()
        await q.close()
        if engine is not None:
            await engine.close()
    return None if w.engine_dead else stats


@queue_app.command("stats")
def queue_stats() -> None:
    """Counts: queued (per priority), running, retrying, dead, and leases expired (reaped) so far."""
    table = Table(show_header=False)
    for k, v in _on_queue(lambda q: q.stats()).items():
        table.add_row(k, str(v))
    err.print(table)


@queue_app.command("ls")
def queue_ls() -> None:
    """Job ids by state, the next to run first."""
    print(json.dumps(_on_queue(lambda q: q.list()), indent=2))


@queue_app.command("dead")
def queue_dead() -> None:
    """Dead-lettered jobs with their attempts and last error."""
    print(json.dumps(_on_queue(lambda q: q.dead()), indent=2))


@queue_app.command("cancel")
def queue_cancel(job_id: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Cancel a job: if queued it never runs; if running it stops at its next chunk."""
    done = _run(_cancel(_lifecycle(get_settings()), job_id))
    err.print(f"{job_id}: " + ("removed from the queue" if done.stopped_before_start else
                               f"{done.record.status}" if done.record.status.terminal else
                               "cancel flagged; a running worker stops it at its next chunk"))


async def _cancel(jobs: JobLifecycle, job_id: str) -> Cancelled:
    try:
        return await jobs.cancel(job_id)
    finally:
        await jobs.close()


@queue_app.command("requeue")
def queue_requeue(job_id: Annotated[str, typer.Argument(help="A dead-lettered job id.")]) -> None:
    """Put a dead-lettered job back on its queue with fresh attempts."""
    if not _on_queue(lambda q: q.requeue(job_id)):
        err.print(f"[bold red]{job_id} is not in the dead-letter list[/]")
        raise typer.Exit(EXIT_JOB_FAILED)
    err.print(f"{job_id} requeued")
