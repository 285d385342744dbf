"""Schedules' time slots (croniter): which slot of a cron expression is due, and the run it makes.

Cron expressions have five fields and are read in UTC. A tick runs a schedule's latest due slot
only, never a backlog: a nightly suite whose workers were down for three days runs once when they
come back. A slot before the schedule was made is never due (adding a schedule does not start a
run at once).
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter


def cron_problem(cron: str) -> str | None:
    """Why `cron` is not a five-field cron expression, or None."""
    if len(cron.split()) != 5:
        return "a cron expression has five fields: minute hour day-of-month month day-of-week (UTC)"
    if not croniter.is_valid(cron):
        return f"not a valid cron expression: {cron!r}"
    return None


def latest_slot(cron: str, now: datetime) -> datetime:
    """The latest time at or before `now` that `cron` names (to the minute, UTC)."""
    base = now.astimezone(UTC).replace(second=0, microsecond=0)
    if croniter.match(cron, base):
        return base
    return croniter(cron, base).get_prev(datetime).astimezone(UTC)


def due_slot(cron: str, now: datetime, *, created_at: datetime | None, last_slot: datetime | None) -> datetime | None:
    """The slot a tick at `now` should run: the latest one, unless it was run already or came before the
    schedule existed."""
    slot = latest_slot(cron, now)
    if created_at is not None and slot < created_at.astimezone(UTC).replace(second=0, microsecond=0):
        return None
    if last_slot is not None and slot <= last_slot:
        return None
    return slot


def slot_run_id(schedule_id: str, slot: datetime) -> str:
    """The run a slot makes: the same for every ticker, so the run and its job are made once."""
    return f"{schedule_id[:100]}-{slot.astimezone(UTC):%Y%m%dT%H%MZ}"
