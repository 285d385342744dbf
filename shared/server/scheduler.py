"""The scheduler tick (issue 14): each enabled schedule's due slot becomes one eval run, submitted once.

Every `llm-jobs worker` ticks (SCHEDULE_TICK_S), and so does Modal's Cron function; any number may
tick at once. For each enabled schedule whose latest slot is due (shared/evals/schedule.py):

1. `claim_slot` inserts (schedule, slot): one ticker wins, and the schedule's `last_slot` moves on.
2. The winner makes the run (`open_run`: the run's id comes from the slot, so it is the same for
   everyone; the suite is the version the store holds now; the baseline is the suite's last run)
   and submits its job through the lifecycle, like any other job.

Exactly once: a run for a slot has one id, `store.accept` records its job once, and only the
call that recorded it dispatches it. A ticker that lost the claim looks whether the slot's job
exists; if the winner died between its claim and its submit, the job is not there, and this ticker
submits it (the same idempotent steps), so a claimed slot is never lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from handler.evals import load_suite, open_run
from shared.contracts.errors import LLMJobsError
from shared.contracts.owners import scoped_id
from shared.contracts.settings import Settings
from shared.evals.records import RunRecord, ScheduleRecord
from shared.evals.schedule import due_slot, latest_slot, slot_run_id
from shared.queue.upstash import JobQueue
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores import open_store

log = logging.getLogger("llm_jobs.scheduler")


async def tick(lifecycle: JobLifecycle, *, now: datetime | None = None) -> list[RunRecord]:
    """Submit every due slot's run that nobody submitted yet; the runs this call submitted."""
    store = lifecycle.store
    now = now or datetime.now(UTC)
    made: list[RunRecord] = []
    for sched in await store.list_schedules(enabled_only=True):
        try:
            run = await _slot(lifecycle, sched, now)
        except LLMJobsError as e:  # one schedule's trouble (its suite gone, the queue down) never stops the others
            log.warning("schedule %s: could not start its run: %s", sched.id, e)
            continue
        if run is not None:
            made.append(run)
    return made


async def _slot(lifecycle: JobLifecycle, sched: ScheduleRecord, now: datetime) -> RunRecord | None:
    store = lifecycle.store
    slot = due_slot(sched.cron, now, created_at=sched.created_at, last_slot=sched.last_slot)
    if slot is None:
        slot = latest_slot(sched.cron, now)
        if sched.last_slot != slot:  # not due, and not the slot claimed last: nothing to do
            return None
        # the slot claimed last: its run is there, unless its claimer died before submitting it
    run_id = slot_run_id(sched.id, slot)
    claimed = await store.claim_slot(sched.id, slot, scoped_id(sched.owner, run_id))
    if not claimed and await store.get_job(scoped_id(sched.owner, run_id)) is not None:
        return None  # another ticker made it
    suite = await load_suite(store, sched.suite_id, None)
    if suite is None:
        log.warning("schedule %s: its suite %s is not in the store", sched.id, sched.suite_id)
        return None
    run, job = await open_run(store, suite, owner=sched.owner, model=sched.model, baseline="last", run_id=run_id,
                              schedule_id=sched.id, slot=slot)
    accepted = await lifecycle.submit(job)
    if not accepted.created:
        return None
    log.info("schedule %s: slot %s: submitted run %s", sched.id, slot.isoformat(), run.id)
    return run


async def tick_once(settings: Settings) -> list[RunRecord]:
    """One tick with the store and the queue the settings name (Modal's Cron, `llm-jobs schedule tick`)."""
    store = open_store(settings)
    dispatcher = QueueDispatcher(JobQueue.from_settings(settings))
    try:
        return await tick(JobLifecycle(store, dispatcher, settings))
    finally:
        await dispatcher.close()
        await store.close()


async def tick_every(lifecycle: JobLifecycle, every_s: float) -> None:
    """Tick every `every_s` seconds until cancelled (beside `llm-jobs worker`'s drain loop). A failed tick is
    logged and the next one tries again."""
    while True:
        try:
            await tick(lifecycle)
        except LLMJobsError as e:
            log.warning("scheduler tick failed (the next one tries again): %s", e)
        await asyncio.sleep(every_s)
