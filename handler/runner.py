"""The job runner: every item through the engine at once, results out in chunks.

`run_job` is an async generator. It keeps up to `engine.capacity` requests in flight through
a fixed pool of workers (continuous batching over the whole job, never batches of 10), and
yields a ChunkEvent every `chunk_size` results or every `chunk_interval_s`, whichever comes
first, then one FinalEvent. Closing the generator cancels the workers, which aborts their
requests inside the engine.

With a store (DESIGN.md invariants): items already stored are skipped and counted as done;
a chunk is durable in the store before it is yielded (writes retry with bounded backoff,
then the job fails with the reason and a re-run resumes); the outcome is recorded by
`finish`, shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

from handler.engine.base import Engine
from handler.progress import ProgressTracker
from shared.errors import EngineDeadError, ErrorCode, ItemFailure, StoreError, StoreUnavailable
from shared.models import ChunkEvent, FinalEvent, Item, Job, JobStatus, Result, ResultStatus, Summary, Usage
from shared.prepare import Limits, RequestBuilder, check_output
from shared.stores.base import Store, retrying

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 10
DEFAULT_CHUNK_INTERVAL_S = 2.0


class _Dead:
    """Put on the results queue by a worker that found the engine dead."""

    def __init__(self, reason: str):
        self.reason = reason


class _Stop:
    """Put on the results queue when the caller asks the run to stop (a worker's SIGTERM)."""


async def _on_stop(stop: asyncio.Event, queue: asyncio.Queue[Result | _Dead | _Stop]) -> None:
    await stop.wait()
    queue.put_nowait(_Stop())


async def _run_item(engine: Engine, builder: RequestBuilder, item: Item) -> Result:
    started = time.perf_counter()
    try:
        request = builder.build(item)
        out = await engine.complete(request)
        usage = Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                      total_tokens=out.prompt_tokens + out.completion_tokens)
        latency = round((time.perf_counter() - started) * 1000, 1)
        try:
            parsed = check_output(request, out.text)
        except ItemFailure as f:
            return Result.failure(item.custom_id, f.code, f.message, text=out.text, usage=usage,
                                  finish_reason=out.finish_reason, latency_ms=latency)
        return Result(custom_id=item.custom_id, status=ResultStatus.ok, text=out.text, parsed=parsed,
                      finish_reason=out.finish_reason, usage=usage, latency_ms=latency)
    except ItemFailure as f:
        return Result.failure(item.custom_id, f.code, f.message, text=f.text,
                              latency_ms=round((time.perf_counter() - started) * 1000, 1))


async def _worker(engine: Engine, builder: RequestBuilder, items: Iterator[Item],
                  out: asyncio.Queue[Result | _Dead | _Stop]) -> None:
    for item in items:  # the iterator is shared: each worker takes the next item
        try:
            out.put_nowait(await _run_item(engine, builder, item))
        except EngineDeadError as e:
            out.put_nowait(_Dead(str(e)))
            return
        except Exception as e:  # a bug in one item must not sink the job
            log.exception("item %s failed unexpectedly", item.custom_id)
            out.put_nowait(Result.failure(item.custom_id, ErrorCode.engine_error, f"{type(e).__name__}: {e}"))


async def _finish(store: Store | None, job_id: str, status: JobStatus, summary: Summary, retry_s: float) -> None:
    if store is None:
        return
    try:
        # shielded: a cancelled job still records that it was cancelled
        await asyncio.shield(retrying(lambda: store.finish(job_id, status, summary), within_s=retry_s))
    except StoreError:
        log.exception("job %s: could not record its outcome (%s)", job_id, status)


async def run_job(
    job: Job,
    engine: Engine,
    *,
    store: Store | None = None,
    limits: Limits = Limits(),
    any_model: bool = False,
    chunk_size: int | None = None,
    chunk_interval_s: float | None = None,
    store_retry_s: float = 60.0,
    close_status: Callable[[], JobStatus | None] = lambda: JobStatus.cancelled,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ChunkEvent | FinalEvent]:
    """Run `job` on `engine`; see the module docstring.

    `close_status` is what a closed or cancelled run records: `cancelled` unless the caller says
    otherwise, or nothing when it returns None. When `stop` is set, the run stops at once:
    requests in flight are aborted, the results already in are stored and yielded, and the
    final event says `queued` (the job can be resumed by anyone).
    """
    size = job.chunk_size or chunk_size or DEFAULT_CHUNK_SIZE
    interval = job.chunk_interval_s or chunk_interval_s or DEFAULT_CHUNK_INTERVAL_S
    builder = RequestBuilder(job, limits, engine.served_models, any_model=any_model)

    done: dict[str, ResultStatus] = {}
    if store is not None:
        try:
            record = job if job.model else job.model_copy(update={"model": engine.model_name})
            await retrying(lambda: store.begin(record), within_s=store_retry_s)
            done = await retrying(lambda: store.done_ids(job.id), within_s=store_retry_s)
        except StoreError as e:
            tracker = ProgressTracker(job.total, clock=clock)
            yield FinalEvent(job_id=job.id, status=JobStatus.failed, summary=tracker.summary(f"store: {e}"))
            return
    skipped_ok = sum(s == ResultStatus.ok for s in done.values())
    tracker = ProgressTracker(job.total, skipped_ok=skipped_ok, skipped_failed=len(done) - skipped_ok, clock=clock)
    todo = [i for i in job.items if i.custom_id not in done]

    queue: asyncio.Queue[Result | _Dead | _Stop] = asyncio.Queue()
    buffer: list[Result] = [Result.failure(r.custom_id, r.code, r.describe())
                            for r in job.rejected if r.custom_id not in done]
    items = iter(todo)
    workers = [asyncio.create_task(_worker(engine, builder, items, queue), name=f"{job.id}-w{i}")
               for i in range(min(engine.capacity, len(todo)))]
    stopper = asyncio.create_task(_on_stop(stop, queue)) if stop is not None else None
    seq = 0
    dead: str | None = None
    stopped = False
    last_flush = clock()
    pending = len(todo)

    async def chunk(results: list[Result]) -> ChunkEvent:
        nonlocal seq, last_flush
        if store is not None:  # durable before it is yielded
            await retrying(lambda: store.write(job.id, results), within_s=store_retry_s)
        for r in results:
            tracker.record(r)
        seq += 1
        last_flush = clock()
        return ChunkEvent(job_id=job.id, seq=seq, results=results, progress=tracker.snapshot())

    try:
        while pending and dead is None and not stopped:
            while len(buffer) >= size:
                yield await chunk(buffer[:size])
                del buffer[:size]
            wait = last_flush + interval - clock()
            if buffer and wait <= 0:
                yield await chunk(buffer)
                buffer = []
                continue
            try:
                got = await asyncio.wait_for(queue.get(), timeout=wait if buffer else None)
            except TimeoutError:
                continue
            while True:
                if isinstance(got, _Dead):
                    dead = dead or got.reason
                elif isinstance(got, _Stop):
                    stopped = True
                    await _stop(workers)  # abort what is in flight; keep what is in
                else:
                    buffer.append(got)
                    pending -= 1
                if queue.empty():
                    break
                got = queue.get_nowait()
        while buffer:
            yield await chunk(buffer[:size])
            del buffer[:size]
    except StoreUnavailable as e:
        dead = f"store unreachable for {store_retry_s:g} s, stopped; re-run to resume: {e}"
    except StoreError as e:
        dead = f"store refused a write, stopped: {e}"
    except (asyncio.CancelledError, GeneratorExit):
        await _stop(workers)
        closed = close_status()
        if closed is not None:
            await _finish(store, job.id, closed, tracker.summary(closed.value), store_retry_s)
        raise
    finally:
        if stopper is not None:
            stopper.cancel()
        await _stop(workers)
    if stopped and not dead:
        status, summary = JobStatus.queued, tracker.summary("stopped; stored results are kept, a re-run resumes")
    else:
        status = JobStatus.failed if dead else JobStatus.completed
        summary = tracker.summary(dead)
    await _finish(store, job.id, status, summary, store_retry_s)
    yield FinalEvent(job_id=job.id, status=status, summary=summary)


async def _stop(workers: list[asyncio.Task[None]]) -> None:
    """Cancel the workers (aborting their requests in the engine) and wait for them."""
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
