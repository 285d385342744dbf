"""`llm-jobs submit`, `watch` and `queue ...` in a subprocess, against the queue adapter (no engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import UPSTASH_TOKEN, make_queue
from tests.fakes import chunk_event, final_event

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_store(tmp_path, monkeypatch):
    """`submit` and `watch` record and read jobs in the store: a fresh SQLite file per test, never the
    developer's (the default SQLITE_PATH is under ~/.local/share)."""
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "jobs.db"))
    for var in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(var, raising=False)


def cli(upstash, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UPSTASH_REDIS_REST_URL": upstash.url + "/", "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN,
           "COLUMNS": "150"}
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


async def test_submit_prints_the_id_once_and_queue_commands_show_it(upstash, redis_server):
    redis_server.flush()
    first = cli(upstash, "submit", str(ROOT / "examples/grading/job.json"), "--priority", "high")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "grading-demo" and "queued (high)" in first.stderr
    again = cli(upstash, "submit", str(ROOT / "examples/grading/job.json"))
    assert "already known" in again.stderr
    assert json.loads(cli(upstash, "queue", "ls").stdout)["queued_high"] == ["grading-demo"]
    assert "queued_high" in cli(upstash, "queue", "stats").stderr
    assert "removed from the queue" in cli(upstash, "queue", "cancel", "grading-demo").stderr
    assert json.loads(cli(upstash, "queue", "ls").stdout)["queued_high"] == []


async def test_submit_refuses_invalid_input_before_queueing(upstash, redis_server, tmp_path):
    redis_server.flush()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"template": "{% if %}", "items": [{"fields": {}}]}))
    r = cli(upstash, "submit", str(bad))
    assert r.returncode == 2 and "template" in r.stderr
    assert json.loads(cli(upstash, "queue", "ls").stdout)["queued_default"] == []


async def test_watch_follows_events_to_the_final_one(upstash, redis_server):
    redis_server.flush()
    q = make_queue(upstash)
    await q.publish("w1", chunk_event("w1", 1, total=6))
    await q.publish("w1", final_event("w1", total=6, completed=5, failed=1))
    r = cli(upstash, "watch", "w1")
    assert r.returncode == 3 and "w1: completed, 1 failed item(s)" in r.stderr
    await q.close()


def test_a_wrong_token_is_reported_plainly(upstash):
    env = {**os.environ, "UPSTASH_REDIS_REST_URL": upstash.url, "UPSTASH_REDIS_REST_TOKEN": "nope"}
    r = subprocess.run([sys.executable, "-m", "shared.cli", "queue", "stats"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 1 and "unauthorized" in r.stderr and "nope" not in r.stderr
