"""Structured logs of a real queue worker run (issue 17): with LOG_FORMAT=json every line the worker's
handler writes is a JSON object, the lines written inside a job carry its job, shard, worker and attempt
ids, a line written while an item runs carries the item's, and no line carries prompt or result text. The
real queue (upstash-redis -> adapter -> redis-server), a real SQLite store, a staged job of several
shards (what the API sends), and a fake engine that logs a line per item and fails one item with an
exception that quotes its prompt (the runner logs that one as unexpected)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime

from handler import logs
from handler.worker import Worker
from shared.contracts.models import Item, Job, JobStatus
from shared.contracts.settings import Settings
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from tests.conftest import UPSTASH_TOKEN
from tests.fakes import FakeEngine

#: in every prompt and every output: no log line may show it
PROMPT_MARK, RESULT_MARK = "PROMPT-TEXT-9f3c", "RESULT-TEXT-41aa"
JOB, N, SHARD = "logged-job", 6, 2
BROKEN = "c3"  #: the item whose request raises an unexpected error quoting its prompt

engine_log = logging.getLogger("tests.fake_engine")


class LoggingEngine(FakeEngine):
    """Logs a line for each request it takes (as vLLM's own loggers would, inside the item's run)."""

    async def complete(self, request):
        engine_log.info("taking a request")
        if request.custom_id == BROKEN:  # a bug whose message quotes the item: the log must not
            raise RuntimeError(f"could not handle {request.messages or request.prompt}")
        return await super().complete(request)


async def run_logged_job(queue, tmp_path, log_format: str, log_level: str = "INFO"
                         ) -> tuple[list[str], SQLiteStore]:
    """Stage JOB in shards, run it with a draining worker, and return the lines the root handler wrote."""
    settings = Settings(_env_file=None, log_format=log_format, log_level=log_level, shard_size=SHARD)
    logs.setup_logging(settings)
    buffer = io.StringIO()
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    store = SQLiteStore(tmp_path / "jobs.db")
    items = [Item(custom_id=f"c{i}", prompt=f"{PROMPT_MARK} question {i}") for i in range(N)]
    accepted = await JobLifecycle(store, QueueDispatcher(queue), settings).submit(Job(id=JOB, items=items))
    assert accepted.dispatched
    engine = LoggingEngine(text=lambda r: f"{RESULT_MARK} for {r.custom_id}")
    stats = await Worker(engine, queue, store, worker_id="w-logs", drain=True, poll_min_s=0.05, poll_max_s=0.2,
                         lease_s=5).run()
    assert stats.done == N // SHARD
    return buffer.getvalue().splitlines(), store


async def test_json_lines_carry_the_ids_and_no_text(queue, tmp_path, restore_logging):
    # verbose (the CLI's -v): the store's driver logs what it writes at DEBUG, and must still not show it
    lines, store = await run_logged_job(queue, tmp_path, "json", "DEBUG")
    rec = await store.get_job(JOB)
    assert (rec.status, rec.completed, rec.failed) == (JobStatus.completed, N - 1, 1)
    (broken,) = [r for r in await store.results(JOB, limit=N) if r.custom_id == BROKEN]
    assert PROMPT_MARK in broken.error.message  # the result keeps the message; the log does not
    await store.close()

    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(isinstance(r, dict) for r in records)
    for r in records:
        assert {"time", "level", "logger", "message"} <= set(r)
        assert datetime.fromisoformat(r["time"]).utcoffset() == UTC.utcoffset(None)
        assert PROMPT_MARK not in json.dumps(r) and RESULT_MARK not in json.dumps(r)
        assert None not in r.values()  # ids not set are left out, not null

    # the worker's own lines about a shard name it, with the worker and the attempt
    running = [r for r in records if r["logger"] == "llm_jobs.worker" and " running " in r["message"]]
    assert sorted(r["shard"] for r in running) == list(range(N // SHARD))
    assert all((r["job"], r["worker"], r["attempt"]) == (JOB, "w-logs", 1) for r in running)
    assert all("item" not in r for r in running)
    # the engine's lines, written while an item runs, name the item too
    taken = [r for r in records if r["logger"] == "tests.fake_engine"]
    assert sorted(r["item"] for r in taken) == [f"c{i}" for i in range(N)]
    for r in taken:
        assert (r["job"], r["worker"], r["attempt"], r["shard"]) == (JOB, "w-logs", 1, int(r["item"][1:]) // SHARD)
    # the runner's line about the broken item: its id and where it broke, never the message
    (failed,) = [r for r in records if "failed unexpectedly" in r["message"]]
    assert failed["level"] == "ERROR" and failed["item"] == BROKEN and failed["shard"] == 1
    assert "RuntimeError" in failed["message"] and "could not handle" not in failed["message"]
    # the worker's line at start and end names the worker only
    started = next(r for r in records if r["message"].startswith("worker=w-logs started"))
    assert started["worker"] == "w-logs" and "job" not in started


async def test_plain_lines_end_with_the_ids_and_carry_no_text(queue, tmp_path, restore_logging):
    lines, store = await run_logged_job(queue, tmp_path, "plain")
    await store.close()
    assert lines and not any(PROMPT_MARK in line or RESULT_MARK in line for line in lines)
    assert not any(line.startswith("{") for line in lines)
    taken = [line for line in lines if line.startswith("INFO tests.fake_engine: taking a request ")]
    assert len(taken) == N
    assert all(f"job={JOB} " in line and " worker=w-logs attempt=1" in line and " item=c" in line for line in taken)
    # the worker's lines keep their own `job=<entry> worker=<id> attempt=N` start (tests and tools read it),
    # and get only the ids they do not name
    completed = [line for line in lines if " completed: " in line and "llm_jobs.worker" in line]
    assert len(completed) == N // SHARD
    assert all(line.startswith(f"INFO llm_jobs.worker: job={JOB}#") and line.count("job=") == 1
               and line.endswith(f" shard={line.split('#')[1][0]}") for line in completed)


def test_cli_worker_writes_json_lines_on_stderr(upstash, redis_server, tmp_path):
    """`llm-jobs worker` with LOG_FORMAT=json (a container's worker): its log lines are JSON on stderr,
    not Rich's; a training-only worker draining an empty queue boots no engine."""
    redis_server.flush()
    env = {**os.environ, "UPSTASH_REDIS_REST_URL": upstash.url, "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN,
           "SQLITE_PATH": str(tmp_path / "jobs.db"), "TRAINING_DIR": str(tmp_path / "training"),
           "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    for var in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-m", "shared.cli", "worker", "--train-only", "--drain",
                          "--worker-id", "cli-w"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    records = [json.loads(line) for line in lines]
    started = [r for r in records if r["message"].startswith("worker=cli-w started")]
    assert len(started) == 1 and started[0]["worker"] == "cli-w" and started[0]["level"] == "INFO"
    assert any(r["message"].startswith("worker=cli-w stopped") for r in records)
