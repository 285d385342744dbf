"""The job runner: every item through the engine at once, results out in chunks.

`run_job` is an async generator. It keeps up to `engine.capacity` requests in flight through
a fixed pool of workers (continuous batching over the whole job, never batches of 10), and
yields a ChunkEvent every `chunk_size` results or every `chunk_interval_s`, whichever comes
first, then one FinalEvent. Closing the generator cancels the workers, which aborts their
requests inside the engine.

With a store (docs/architecture.md, "Invariants"): items already stored are skipped and counted
as done; a chunk is durable in the store before it is yielded (writes retry with bounded
backoff, then the job fails with the reason and a re-run resumes); the outcome is recorded by
`record_outcome`, shielded from cancellation.

Preparing requests runs in a thread, once per process, before any engine work: the job's builder,
then every item's request not built by validation already (templates, limits). It is CPU work
that grows with the job and its templates, and the event loop it would block also carries the
queue worker's heartbeats (docs/architecture.md, "Leases").

A caller stops a run with a `StopSignal`: `completed`, `failed`, `cancelled` or `stopped` comes
back as the final event's `outcome`, never as a job status to interpret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from handler.engine.base import Engine
from handler.progress import ProgressTracker
from shared.contracts.errors import EngineDeadError, ErrorCode, InputError, ItemFailure, StoreError, StoreUnavailable
from shared.contracts.events import ChunkEvent, ErrorEvent, Event, FinalEvent, Outcome
from shared.contracts.models import Item, Job, Result, ResultStatus, Summary, Usage
from shared.contracts.prepare import Limits, Request, RequestBuilder, builder_for, check_output
from shared.contracts.settings import DEFAULTS
from shared.stores.base import Store, record_outcome, retrying

log = logging.getLogger(__name__)


#: an item's request, or why it could not be built
Built = Request | Exception


class _Dead:
    """Put on the results queue by a worker that found the engine dead."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass(eq=False)  # compared and hashed by identity: a worker keeps a set of its running jobs' signals
class StopSignal:
    """Ask a running job to stop at once, with the outcome it should end with.

    `stopped` (a worker shutting down) and `cancelled` (a cancel request) are recorded in the
    store; `record=False` records nothing (a lost lease: another worker owns the job now).
    The first `set` wins.
    """

    outcome: Outcome = Outcome.stopped
    record: bool = True
    _event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def set(self, outcome: Outcome = Outcome.stopped, *, record: bool = True) -> None:
        if not self._event.is_set():
            self.outcome, self.record = outcome, record
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


class _Stop:
    """Put on the results queue when the caller's StopSignal is set."""


async def _on_stop(stop: StopSignal, queue: asyncio.Queue[Result | _Dead | _Stop]) -> None:
    await stop.wait()
    queue.put_nowait(_Stop())


def _build_all(builder: RequestBuilder, built: dict[str, Request], items: list[Item]) -> dict[str, Built]:
    """Every item's request, from the builder's cache where validation built it already; an item
    that cannot be built keeps its exception, raised when it runs (it becomes that item's result)."""
    out: dict[str, Built] = {}
    for item in items:
        request = built.get(item.custom_id)
        if request is None:
            try:
                request = builder.build(item)
            except Exception as e:  # raised again by _run_item, where it is handled
                out[item.custom_id] = e
                continue
        out[item.custom_id] = request
    return out


async def _run_item(engine: Engine, builder: RequestBuilder, built: dict[str, Built], item: Item) -> Result:
    started = time.perf_counter()
    try:
        request = built.pop(item.custom_id, None) or builder.build(item)
        if isinstance(request, Exception):
            raise request
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


async def _worker(engine: Engine, builder: RequestBuilder, built: dict[str, Built], items: Iterator[Item],
                  out: asyncio.Queue[Result | _Dead | _Stop]) -> None:
    for item in items:  # the iterator is shared: each worker takes the next item
        try:
            out.put_nowait(await _run_item(engine, builder, built, item))
        except EngineDeadError as e:
            out.put_nowait(_Dead(str(e)))
            return
        except Exception as e:  # a bug in one item must not sink the job
            log.exception("item %s failed unexpectedly", item.custom_id)
            out.put_nowait(Result.failure(item.custom_id, ErrorCode.engine_error, f"{type(e).__name__}: {e}"))


async def _finish(store: Store | None, job_id: str, outcome: Outcome, summary: Summary, retry_s: float) -> None:
    if store is not None:
        await record_outcome(store, job_id, outcome, summary, retry_s=retry_s)


async def run_job(
    job: Job,
    engine: Engine,
    *,
    store: Store | None = None,
    limits: Limits = Limits(),
    any_model: bool = False,
    chunk_size: int = DEFAULTS.default_chunk_size,
    chunk_interval_s: float = DEFAULTS.default_chunk_interval_s,
    store_retry_s: float = DEFAULTS.store_retry_s,
    on_close: Outcome | None = Outcome.cancelled,
    stop: StopSignal | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Event]:
    """Run `job` on `engine`; see the module docstring.

    `on_close` is what a run records when its consumer closes it or its task is cancelled
    (RunPod's /cancel): `cancelled`, or nothing with None. When `stop` is set, the run stops at
    once: requests in flight are aborted, the results already in are stored and yielded, and the
    final event carries the signal's outcome (`stopped`: anyone can resume the job).
    """
    size = job.chunk_size or chunk_size
    interval = job.chunk_interval_s or chunk_interval_s
    try:  # CPU work that grows with the job: in a thread, so the event loop (heartbeats) never starves
        builder, built = await asyncio.to_thread(builder_for, job, limits, engine.served_models, any_model=any_model)
    except InputError as e:  # a job no engine here can run: say why, run nothing, record it failed
        final = FinalEvent.failed(job.id, f"invalid job: {e}", total=job.total)
        await _finish(store, job.id, final.outcome, final.summary, store_retry_s)
        yield ErrorEvent(job_id=job.id, error=final.summary.reason or "invalid job")
        yield final
        return

    done: dict[str, ResultStatus] = {}
    if store is not None:
        try:
            record = job if job.model else job.model_copy(update={"model": engine.model_name})
            await retrying(lambda: store.begin(record), within_s=store_retry_s)
            done = await retrying(lambda: store.done_ids(job.id), within_s=store_retry_s)
        except StoreError as e:
            tracker = ProgressTracker(job.total, clock=clock)
            yield FinalEvent(job_id=job.id, outcome=Outcome.failed, summary=tracker.summary(f"store: {e}"))
            return
    skipped_ok = sum(s == ResultStatus.ok for s in done.values())
    tracker = ProgressTracker(job.total, skipped_ok=skipped_ok, skipped_failed=len(done) - skipped_ok, clock=clock)
    todo = [i for i in job.items if i.custom_id not in done]
    requests = await asyncio.to_thread(_build_all, builder, built, todo)  # every request, once, off the loop

    queue: asyncio.Queue[Result | _Dead | _Stop] = asyncio.Queue()
    buffer: list[Result] = [Result.failure(r.custom_id, r.code, r.describe())
                            for r in job.rejected if r.custom_id not in done]
    items = iter(todo)
    workers = [asyncio.create_task(_worker(engine, builder, requests, items, queue), name=f"{job.id}-w{i}")
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
        if on_close is not None:
            await _finish(store, job.id, on_close, tracker.summary(on_close.value), store_retry_s)
        raise
    finally:
        if stopper is not None:
            stopper.cancel()
        await _stop(workers)
    if dead:
        outcome, summary = Outcome.failed, tracker.summary(dead)
    elif stopped and stop is not None:
        outcome = stop.outcome
        summary = tracker.summary("cancelled" if outcome is Outcome.cancelled else
                                  "stopped; stored results are kept, a re-run resumes")
        if not stop.record:
            yield FinalEvent(job_id=job.id, outcome=outcome, summary=summary)
            return
    else:
        outcome, summary = Outcome.completed, tracker.summary()
    await _finish(store, job.id, outcome, summary, store_retry_s)
    yield FinalEvent(job_id=job.id, outcome=outcome, summary=summary)



async def _stop(workers: list[asyncio.Task[None]]) -> None:
    """Cancel the workers (aborting their requests in the engine) and wait for them."""
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
