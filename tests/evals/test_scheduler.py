"""Scheduled runs (shared/evals/schedule.py, shared/server/scheduler.py): which slot is due, and three
workers ticking at once on the real queue (upstash-redis -> adapter -> redis-server) and a real store
(SQLite, and Postgres with a connection pool of its own per ticker): exactly one run per slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from handler.evals import keep_suite
from shared.contracts.settings import Settings
from shared.evals.records import ScheduleRecord
from shared.evals.schedule import cron_problem, due_slot, latest_slot, slot_run_id
from shared.evals.suite import parse_suite
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.server.scheduler import tick
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_queue

SUITE = parse_suite("""\
id: nightly-suite
cases:
  - {id: a, prompt: "hola", assert: [{type: icontains, value: hola}]}
  - {id: b, prompt: "adéu"}
""")
T = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def test_the_latest_slot_and_when_it_is_due():
    assert latest_slot("0 3 * * *", T + timedelta(seconds=30)) == T
    assert latest_slot("0 3 * * *", T - timedelta(minutes=1)) == T - timedelta(days=1)
    assert latest_slot("*/15 * * * *", T + timedelta(minutes=44)) == T + timedelta(minutes=30)
    made = T - timedelta(days=2)
    assert due_slot("0 3 * * *", T + timedelta(hours=1), created_at=made, last_slot=None) == T
    assert due_slot("0 3 * * *", T + timedelta(hours=1), created_at=made, last_slot=T) is None
    # three days down: one run, for the latest slot only
    assert due_slot("0 3 * * *", T + timedelta(days=3), created_at=made, last_slot=T - timedelta(days=1)) == \
        T + timedelta(days=3)
    # a schedule made after today's slot waits for tomorrow's
    assert due_slot("0 3 * * *", T + timedelta(hours=2), created_at=T + timedelta(hours=1), last_slot=None) is None
    assert slot_run_id("nightly", T) == "nightly-20261207T0300Z"
    assert cron_problem("0 3 * *") and cron_problem("0 25 * * *") and cron_problem("0 3 * * *") is None


async def tickers(stores, queue_url_token, settings, now):
    """One tick from each store's worker, all at once."""
    lifecycles = [JobLifecycle(s, QueueDispatcher(make_queue(queue_url_token)), settings) for s in stores]
    try:
        return await asyncio.gather(*(tick(lc, now=now) for lc in lifecycles))
    finally:
        for lc in lifecycles:
            await lc.dispatcher.close()


async def check_exactly_once(stores, upstash, queue) -> None:
    settings = Settings(_env_file=None)
    rec, _ = await keep_suite(stores[0], SUITE, "alice")
    await stores[0].add_schedule(ScheduleRecord(id="nightly", owner="alice", suite_id=rec.id, cron="0 3 * * *"))
    await stores[0].add_schedule(ScheduleRecord(id="paused", suite_id=rec.id, cron="* * * * *", enabled=False))
    # the schedule was made before the first slot (made "now" by the store): tick a day later, and the day after
    for day in (1, 2):
        now = T + timedelta(days=day, minutes=5)
        made = await tickers(stores, upstash, settings, now)
        assert sum(len(m) for m in made) == 1, made
        slot = T + timedelta(days=day)
        runs = await stores[0].list_runs(rec.id, limit=10)
        assert runs[0].slot == slot and runs[0].schedule_id == "nightly" and runs[0].owner == "alice"
        assert len(runs) == day
        # ticking again in the same slot does nothing
        assert sum(len(m) for m in await tickers(stores, upstash, settings, now + timedelta(minutes=1))) == 0
    ids = {e for state in (await queue.list()).values() for e in state}
    assert len(ids) == 2 and all(i.endswith(("20261208T0300Z", "20261209T0300Z")) for i in ids), ids
    assert (await stores[0].get_schedule("nightly")).last_slot == T + timedelta(days=2)
    runs = await stores[0].list_runs(rec.id, limit=10)
    assert runs[0].baseline is None  # the first runs had no finished run to compare with


async def test_three_workers_ticking_at_once_make_one_run_per_slot_sqlite(tmp_path, upstash, redis_server):
    redis_server.flush()
    stores = [SQLiteStore(tmp_path / "jobs.db") for _ in range(3)]  # three connections to one file
    queue = make_queue(upstash)
    try:
        await check_exactly_once(stores, upstash, queue)
    finally:
        await queue.close()
        for s in stores:
            await s.close()


async def test_three_workers_ticking_at_once_make_one_run_per_slot_postgres(pg, upstash, redis_server):
    from shared.stores.postgres import PostgresStore

    redis_server.flush()
    pg.truncate()
    stores = [PostgresStore(pg.url) for _ in range(3)]  # three pools: three workers
    queue = make_queue(upstash)
    try:
        await check_exactly_once(stores, upstash, queue)
    finally:
        await queue.close()
        for s in stores:
            await s.close()


async def test_a_slot_claimed_by_a_worker_that_died_before_submitting_is_submitted_by_the_next(tmp_path, upstash,
                                                                                              redis_server):
    redis_server.flush()
    store = SQLiteStore(tmp_path / "jobs.db")
    queue = make_queue(upstash)
    rec, _ = await keep_suite(store, SUITE, None)
    await store.add_schedule(ScheduleRecord(id="n", suite_id=rec.id, cron="0 3 * * *",
                                            created_at=T - timedelta(days=5)))
    slot = T + timedelta(days=1)
    assert await store.claim_slot("n", slot, slot_run_id("n", slot))  # ...and then it died
    lifecycle = JobLifecycle(store, QueueDispatcher(queue), Settings(_env_file=None))
    made = await tick(lifecycle, now=slot + timedelta(minutes=2))
    assert [r.id for r in made] == ["n-20261208T0300Z"]
    assert await store.get_job("n-20261208T0300Z") is not None
    assert await tick(lifecycle, now=slot + timedelta(minutes=3)) == []
    await queue.close()
    await store.close()


@pytest.mark.parametrize("cron", ["0 3 * *", "61 * * * *"])
def test_a_bad_cron_expression_is_named(cron):
    assert "cron" in cron_problem(cron)


def test_schedule_add_list_rm_from_the_command_line(tmp_path):
    import os
    import subprocess
    import sys

    suite = tmp_path / "suite.yaml"
    suite.write_text("id: nightly-suite\ncases:\n  - {id: a, prompt: hola}\n")
    env = {**os.environ, "SQLITE_PATH": str(tmp_path / "jobs.db"), "SUPABASE_URL": "", "DATABASE_URL": "",
           "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shared.cli", "schedule", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    assert cli("add", str(suite), "--cron", "0 3 * * *", "--id", "nightly", "--model", "m").returncode == 0
    bad = cli("add", str(suite), "--cron", "0 3 * *")
    assert bad.returncode == 2 and "five fields" in bad.stderr
    listed = cli("list")
    assert listed.returncode == 0 and "nightly" in listed.stdout and "0 3 * * *" in listed.stdout
    assert cli("rm", "nightly").returncode == 0
    gone = cli("rm", "nightly")
    assert gone.returncode == 2 and "no schedule" in gone.stderr
