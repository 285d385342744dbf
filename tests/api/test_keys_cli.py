"""`llm-jobs keys create | list | revoke` against a SQLite store, and the key it prints working on the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import ThreadedServer


def llm_jobs(db: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SQLITE_PATH": str(db), "SUPABASE_URL": "", "DATABASE_URL": "", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "shared.cli", "keys", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_create_list_revoke_and_the_api_honours_them(tmp_path):
    db = tmp_path / "jobs.db"
    made = llm_jobs(db, "create", "--owner", "team-a", "--label", "vercel-prod")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("ljk_") and len(key) > 40
    listed = llm_jobs(db, "list")
    assert listed.returncode == 0 and "team-a" in listed.stdout and "vercel-prod" in listed.stdout
    assert key not in listed.stdout and key not in listed.stderr  # shown once, never again
    key_id = next(w for w in listed.stdout.split() if w.startswith("key_"))

    settings = Settings(_env_file=None, api_keys="admin-only", rate_limit_per_minute=0, key_cache_s=0)
    server = ThreadedServer(create_app(settings, store=SQLiteStore(db))).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
            assert http.get("/v1/jobs").status_code == 200
            revoked = llm_jobs(db, "revoke", key_id)
            assert revoked.returncode == 0, revoked.stderr
            assert http.get("/v1/jobs").status_code == 403
    finally:
        server.stop()


def test_bad_owner_and_unknown_key_are_refused_with_exit_2(tmp_path):
    db = tmp_path / "jobs.db"
    bad = llm_jobs(db, "create", "--owner", "not a name")
    assert bad.returncode == 2 and "--owner" in bad.stderr and not bad.stdout
    unknown = llm_jobs(db, "revoke", "key_00000000")
    assert unknown.returncode == 2 and "no key" in unknown.stderr


def test_a_supabase_user_id_is_kept_in_lower_case_as_supabase_writes_it(tmp_path):
    db = tmp_path / "jobs.db"
    made = llm_jobs(db, "create", "--owner", "6F1C2A4E-3B5D-4C7E-9F80-1A2B3C4D5E6F")
    assert made.returncode == 0, made.stderr
    listed = llm_jobs(db, "list", "--owner", "6F1C2A4E-3B5D-4C7E-9F80-1A2B3C4D5E6F")
    assert "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f" in listed.stdout and "6F1C" not in listed.stdout
    named = llm_jobs(db, "create", "--owner", "Team-A")  # a name is kept as it is
    assert named.returncode == 0 and "Team-A" in llm_jobs(db, "list").stdout
