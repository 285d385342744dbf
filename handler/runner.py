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
then every item's request not built by validation already (templates, limits). The LoRA adapters the job
names are loaded before any item runs (handler/adapters.py): one the engine cannot serve fails the job, as
a model it does not serve does. It is CPU work
that grows with the job and its templates, and the event loop it would block also carries the
queue worker's heartbeats (docs/architecture.md, "Leases").

A caller stops a run with a `StopSignal`: `completed`, `failed`, `cancelled` or `stopped` comes
back as the final event's `outcome`, never as a job status to interpret.

Metrics (shared/observability/metrics.py) are observed as each chunk is stored: the items this run ran
by status, their tokens and latency (items found stored already are not counted: another run ran them),
the store write's time, and the shard's progress (its series removed when the run ends). The summary's
figures (handler/progress.py) include the engine's peak KV-cache use over the run, where the engine
says (`kv_cache_window`, handler/engine/base.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from handler import adapters
from handler.engine.base import Engine, KvCacheWindow
from handler.logs import outline
from handler.progress import ProgressTracker
from shared.contracts.errors import (
    EngineDeadError,
    EngineError,
    ErrorCode,
    InputError,
    ItemFailure,
    StoreError,
    StoreUnavailable,
)
from shared.contracts.events import ChunkEvent, ErrorEvent, Event, FinalEvent, Outcome
from shared.contracts.models import Item, Job, Rejection, Result, ResultStatus, Summary, Usage
from shared.contracts.prepare import Limits, Request, RequestBuilder, builder_for, check_output
from shared.contracts.settings import DEFAULTS
from shared.contracts.shards import ShardRef
from shared.observability import metrics
from shared.observability.context import log_context
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


async def _on_stop(stop: StopSignal, queue: asyncio.Queue[Any]) -> None:
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


class _Fed:
    """Put on the results queue by the feeder once every item of the run has been handed out."""

    def __init__(self, error: str | None = None):
        self.error = error


_Got = Result | _Dead | _Stop | _Fed


async def _worker(engine: Engine, builder: RequestBuilder, built: dict[str, Built],
                  work: asyncio.Queue[Item | None], out: asyncio.Queue[_Got]) -> None:
    while (item := await work.get()) is not None:  # a shared queue: each worker takes the next item
        with log_context(item=item.custom_id):  # every line logged while it runs (the engine's too) names it
            try:
                out.put_nowait(await _run_item(engine, builder, built, item))
            except EngineDeadError as e:
                out.put_nowait(_Dead(str(e)))
                return
            except Exception as e:  # a bug in one item must not sink the job
                # its message may quote the item: the log gets where it was raised, the result the message
                log.error("item %s failed unexpectedly: %s", item.custom_id, outline(e))
                out.put_nowait(Result.failure(item.custom_id, ErrorCode.engine_error, f"{type(e).__name__}: {e}"))


Page = list[Item | Rejection]


async def _memory_pages(job: Job, size: int) -> AsyncIterator[Page]:
    """A job that came whole (an inline document): its items, then the ones refused at the edge."""
    rows: Page = [*job.items, *job.rejected]
    for k in range(0, len(rows), size):
        yield rows[k:k + size]


async def _store_pages(store: Store, ref: ShardRef, size: int, retry_s: float) -> AsyncIterator[Page]:
    """A shard's staged items, read page by page: memory holds a page, never the job."""
    at = ref.start
    while at < ref.end:
        page = await retrying(lambda at=at: store.read_items(ref.job_id, start_idx=at, end_idx=ref.end, limit=size),
                              within_s=retry_s)
        if not page:
            raise StoreError(f"job {ref.job_id}: items {at}..{ref.end - 1} are not staged")
        yield page
        at += len(page)


@dataclass
class _Feed:
    """Hands a run's items to the workers, page by page, skipping those already stored."""

    pages: AsyncIterator[Page]
    store: Store | None
    job_id: str
    builder: RequestBuilder
    built: dict[str, Built]
    tracker: ProgressTracker
    retry_s: float
    engine: Engine | None = None
    #: results this run will produce (items handed out plus rejections)
    expected: int = 0
    #: a page named an adapter no engine here can serve: the job is invalid (an ErrorEvent goes out)
    invalid: bool = False

    async def run(self, work: asyncio.Queue[Item | None], out: asyncio.Queue[_Got], workers: int) -> None:
        error = None
        try:
            async for page in self.pages:
                await self._page(page, work, out)
        except StoreError as e:
            error = f"store: {e}"
        except InputError as e:  # an adapter the engine cannot serve: its items must never reach it
            error, self.invalid = f"invalid job: {e}", True
        except EngineError as e:
            error = str(e)
        except Exception as e:
            log.exception("job %s: reading its items failed", self.job_id)
            error = f"reading items: {type(e).__name__}: {e}"
        finally:
            out.put_nowait(_Fed(error))
        for _ in range(workers):
            await work.put(None)

    async def _page(self, page: Page, work: asyncio.Queue[Item | None], out: asyncio.Queue[_Got]) -> None:
        done: dict[str, ResultStatus] = {}
        if self.store is not None:
            store, ids = self.store, [row.custom_id for row in page]
            done = await retrying(lambda: store.done_ids(self.job_id, ids), within_s=self.retry_s)
        ok = sum(s == ResultStatus.ok for s in done.values())
        self.tracker.skip(ok, len(done) - ok)
        fresh = [row for row in page if row.custom_id not in done]
        items = [row for row in fresh if isinstance(row, Item)]
        if self.engine is not None and (new := adapters.named(items) - adapters.loaded(self.engine)):
            # loaded before the page runs (prepare loaded every one it saw: this is a shard on an engine
            # that serves no adapters, which refuses them)
            await adapters.require(self.engine, self.store, new, retry_s=self.retry_s)
        self.expected += len(fresh)
        for r in fresh:
            if isinstance(r, Rejection):
                out.put_nowait(Result.failure(r.custom_id, r.code, r.describe()))
        # every request of the page, once, off the loop (templates: CPU work)
        self.built.update(await asyncio.to_thread(_build_all, self.builder, self.built, items))
        for item in items:
            await work.put(item)


def _observe(results: list[Result]) -> None:
    """Count the items this run ran (shared/observability/metrics.py)."""
    for r in results:
        metrics.ITEMS.labels(status=r.status.value).inc()
        if r.usage is not None:
            metrics.PROMPT_TOKENS.inc(r.usage.prompt_tokens)
            metrics.COMPLETION_TOKENS.inc(r.usage.completion_tokens)
        if r.latency_ms is not None:
            metrics.ITEM_LATENCY.observe(r.latency_ms / 1000)


def _kv_window(engine: Engine) -> KvCacheWindow | None:
    """The engine's KV-cache window for this run, where it keeps one (optional: handler/engine/base.py)."""
    opener = getattr(engine, "kv_cache_window", None)
    return opener() if callable(opener) else None


async def _finish(store: Store | None, job_id: str, outcome: Outcome, summary: Summary, retry_s: float) -> None:
    if store is not None:
        await record_outcome(store, job_id, outcome, summary, retry_s=retry_s)


async def run_job(
    job: Job | ShardRef,
    engine: Engine,
    *,
    store: Store | None = None,
    limits: Limits = Limits(),
    any_model: bool = False,
    chunk_size: int = DEFAULTS.default_chunk_size,
    chunk_interval_s: float = DEFAULTS.default_chunk_interval_s,
    store_retry_s: float = DEFAULTS.store_retry_s,
    page_items: int = DEFAULTS.read_page_items,
    on_close: Outcome | None = Outcome.cancelled,
    stop: StopSignal | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_stored: Callable[[list[Result]], Awaitable[object]] | None = None,
) -> AsyncIterator[Event]:
    """Run `job` on `engine`; see the module docstring.

    `job` is a whole Job (an inline document), or a `ShardRef`: one shard of a job whose items are
    staged in `store`, read page by page. A shard of a job of several shards records nothing about
    the job itself: its caller decides what the job's outcome is (handler/rollup.py).

    `on_close` is what a run records when its consumer closes it or its task is cancelled
    (RunPod's /cancel): `cancelled`, or nothing with None. When `stop` is set, the run stops at
    once: requests in flight are aborted, the results already in are stored and yielded, and the
    final event carries the signal's outcome (`stopped`: anyone can resume the job). `on_stored` is
    called with each chunk's results once they are stored, before the chunk is yielded (an eval
    run scores them: handler/evals.py); it must not raise.
    """
    ref = job if isinstance(job, ShardRef) else None
    whole = ref.options_job() if ref is not None else job
    assert isinstance(whole, Job)
    job_id, job_total = whole.id, ref.total if ref is not None else whole.total
    run_total = ref.size if ref is not None else whole.total
    records = store if ref is None or not ref.sharded else None  # a shard of several: the caller records
    shard_of = {"shard": ref.shard, "shards": ref.shards} if ref is not None and ref.sharded else {}
    if ref is not None and store is None:
        raise ValueError("a shard's items are in the store: run_job needs `store`")
    size = whole.chunk_size or chunk_size
    interval = whole.chunk_interval_s or chunk_interval_s
    try:  # CPU work that grows with the job: in a thread, so the event loop (heartbeats) never starves
        builder, built = await asyncio.to_thread(builder_for, whole, limits, engine.served_models,
                                                 any_model=any_model)
        # the LoRA adapters it names, loaded before anything runs (handler/adapters.py)
        await adapters.prepare(engine, store, whole, ref, page_items=page_items, retry_s=store_retry_s)
    except InputError as e:  # a job no engine here can run: say why, run nothing, record it failed
        final = FinalEvent.failed(job_id, f"invalid job: {e}", total=job_total)
        await _finish(store, job_id, final.outcome, final.summary, store_retry_s)
        yield ErrorEvent(job_id=job_id, error=final.summary.reason or "invalid job")
        yield final
        return
    except StoreError as e:  # looking adapters up: nothing ran, and nothing is recorded (as for `begin` below)
        yield FinalEvent.failed(job_id, f"store: {e}", total=job_total)
        return
    except EngineError as e:  # the engine did not load an adapter: nothing ran; a run again may go through
        final = FinalEvent.failed(job_id, str(e), total=job_total)
        await _finish(store, job_id, final.outcome, final.summary, store_retry_s)
        yield final
        return

    kv = _kv_window(engine)
    tracker = ProgressTracker(run_total, clock=clock, kv_peak=(lambda: kv.peak) if kv is not None else None)
    shard_label = str(ref.shard if ref is not None and ref.sharded else 0)  # SHARD_PROGRESS's
    if store is not None:
        try:
            record = whole if whole.model else whole.model_copy(update={"model": engine.model_name})
            await retrying(lambda: store.begin(record, total=job_total), within_s=store_retry_s)
        except StoreError as e:
            yield FinalEvent(job_id=job_id, outcome=Outcome.failed, summary=tracker.summary(f"store: {e}"))
            return
    pages = (_store_pages(store, ref, page_items, store_retry_s) if ref is not None and store is not None
             else _memory_pages(whole, page_items))
    feed = _Feed(pages, store, job_id, builder, built, tracker, store_retry_s, engine)

    queue: asyncio.Queue[_Got] = asyncio.Queue()
    work: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=max(page_items, engine.capacity))
    n_workers = max(1, min(engine.capacity, run_total))
    workers = [asyncio.create_task(_worker(engine, builder, built, work, queue), name=f"{job_id}-w{i}")
               for i in range(n_workers)]
    feeder = asyncio.create_task(feed.run(work, queue, n_workers), name=f"{job_id}-feed")
    tasks = [feeder, *workers]
    stopper = asyncio.create_task(_on_stop(stop, queue)) if stop is not None else None
    seq = 0
    dead: str | None = None
    stopped = fed = False
    received = 0
    buffer: list[Result] = []
    last_flush = clock()

    async def chunk(results: list[Result]) -> ChunkEvent:
        nonlocal seq, last_flush
        if store is not None:  # durable before it is yielded
            with metrics.STORE_WRITE.time():
                await retrying(lambda: store.write(job_id, results), within_s=store_retry_s)
        stored_at = time.time()
        if on_stored is not None:
            await on_stored(results)
        for r in results:
            tracker.record(r)
        _observe(results)
        tracker.chunked()
        progress = tracker.snapshot()
        metrics.SHARD_PROGRESS.labels(job_id, shard_label).set(tracker.done / tracker.total if tracker.total else 1.0)
        seq += 1
        last_flush = clock()
        return ChunkEvent(job_id=job_id, seq=seq, results=results, progress=progress, stored_at=stored_at,
                          **shard_of)

    try:
        while not (fed and received == feed.expected) and dead is None and not stopped:
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
                elif isinstance(got, _Fed):
                    fed = True
                    dead = dead or got.error
                elif isinstance(got, _Stop):
                    stopped = True
                    await _stop(tasks)  # abort what is in flight; keep what is in
                else:
                    buffer.append(got)
                    received += 1
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
        await _stop(tasks)
        if on_close is not None:
            await _finish(records, job_id, on_close, tracker.summary(on_close.value), store_retry_s)
        raise
    finally:
        if stopper is not None:
            stopper.cancel()
        await _stop(tasks)
        if kv is not None:
            kv.close()  # the peak over the run, whatever runs on the engine next
        metrics.shard_done(job_id, shard_label)
    if dead:
        outcome, summary = Outcome.failed, tracker.summary(dead)
    elif stopped and stop is not None:
        outcome = stop.outcome
        summary = tracker.summary("cancelled" if outcome is Outcome.cancelled else
                                  "stopped; stored results are kept, a re-run resumes")
        if not stop.record:
            yield FinalEvent(job_id=job_id, outcome=outcome, summary=summary)
            return
    else:
        outcome, summary = Outcome.completed, tracker.summary()
    await _finish(records, job_id, outcome, summary, store_retry_s)
    if dead and feed.invalid:  # as for a job refused before it began: the worker dead-letters it at once
        yield ErrorEvent(job_id=job_id, error=dead)
    yield FinalEvent(job_id=job_id, outcome=outcome, summary=summary)


async def _stop(workers: list[asyncio.Task[None]]) -> None:
    """Cancel the workers and the feeder (aborting requests in the engine) and wait for them."""
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
