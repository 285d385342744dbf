"""Row-level security as Supabase applies it (issues 13 and 14): a signed-in user reads only their own
jobs, results, items, files and file lines, and their own evaluation suites (with their versions and
cases), runs, case results and schedules (with their claimed slots); `anon` reads nothing; nobody but
the service role writes; nobody but the service role touches `api_keys` or `adapters`.

Each request runs the way PostgREST (and Realtime's RLS check) runs one: inside a transaction,
`set local role anon|authenticated|service_role` and `set_config('request.jwt.claims', <the token's
claims>, true)`. The test cluster (testkit/pg.py) has Supabase's roles, their default privileges (every
privilege on new tables in `public`: row-level security and the migrations' revokes are what limit
them) and an `auth.uid()` that reads `request.jwt.claims` as Supabase's does.

Every test seeds its own rows as the superuser in a transaction that is rolled back at the end, and
each request is a savepoint rolled back after it, so nothing is left for the other tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest

from shared.contracts.owners import scoped_id

# ## The seed: two Supabase users, a key owner (a name), and a job with no owner (an admin's)

U1 = "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f"
U2 = "0d9e8f7a-6b5c-4d3e-8f21-0a1b2c3d4e5f"
U3 = "5a5a5a5a-0000-4000-8000-5a5a5a5a5a5a"  # signed in, owns nothing
ALICE = "alice"  # an API key's owner: a name, never a Supabase user's id

# both users chose the id "essays-1": stored under their own prefixes (shared/contracts/owners.py)
JOB_U1 = scoped_id(U1, "essays-1")
JOB_U1B = scoped_id(U1, "essays-2")
JOB_U2 = scoped_id(U2, "essays-1")
JOB_ALICE = scoped_id(ALICE, "essays-1")
JOB_NONE = "admin-job-1"
JOBS = {JOB_U1: U1, JOB_U1B: U1, JOB_U2: U2, JOB_ALICE: ALICE, JOB_NONE: None}
FILES = {"file-u1": U1, "file-u2": U2, "file-alice": ALICE, "file-none": None}
CUSTOM_IDS = ("c0", "c1")  # per job: c0 ok, c1 error; per job or file: items idx 0 and 1
API_KEYS = {
    "key_0123abcd": ALICE,
    "key_4567cdef": U1,  # a key made for a Supabase user's id (`--owner <uuid>`)
}
#: LoRA adapters (supabase/migrations/20261209000000_adapters.sql): nobody's, the service role's alone
ADAPTERS = ("lora-a", "lora-b")
#: the tables only the service role reaches (no policy at all, and the client roles' grants taken back)
SERVICE_ONLY = ("api_keys", "adapters")



def _eval_id(owner: str | None, name: str) -> str:
    """An evaluation record's stored id: under the owner's prefix, as a job's; an admin's (no owner) `admin-<name>`."""
    return scoped_id(owner, name) if owner is not None else f"admin-{name}"


# evaluation (supabase/migrations/20261207000000_evals.sql), per owner: a suite with one version of two cases
# (idx 0 and 1, case ids CUSTOM_IDS), one run of it with a result per case (c0 passed, c1 not), and one
# schedule with one claimed slot. Versions and cases belong to the suite's owner, results to the run's,
# slots to the schedule's.
EVAL_OWNERS = (U1, U2, ALICE, None)
SUITES = {_eval_id(o, "suite"): o for o in EVAL_OWNERS}
RUNS = {_eval_id(o, "run-1"): o for o in EVAL_OWNERS}
SCHEDULES = {_eval_id(o, "nightly"): o for o in EVAL_OWNERS}
SUITE_U1, RUN_U1, SCHEDULE_U1 = _eval_id(U1, "suite"), _eval_id(U1, "run-1"), _eval_id(U1, "nightly")
VERSION = "0123456789abcdef"  # a suite version's content hash (16 hex digits)
NEW_VERSION = "fedcba9876543210"
SLOT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # psycopg reads timestamptz as aware datetimes: these compare equal
NEW_SLOT = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)

TABLES = ("jobs", "job_results", "job_items", "files", "file_items", "eval_suites", "eval_suite_versions",
          "eval_cases", "eval_runs", "eval_case_results", "eval_schedules", "eval_schedule_slots")
KEY_COLUMNS = {
    "jobs": "id",
    "job_results": "job_id, custom_id",
    "job_items": "job_id, idx",
    "files": "id",
    "file_items": "file_id, idx",
    "eval_suites": "id",
    "eval_suite_versions": "suite_id, version",
    "eval_cases": "suite_id, version, idx",
    "eval_runs": "id",
    "eval_case_results": "run_id, case_id",
    "eval_schedules": "id",
    "eval_schedule_slots": "schedule_id, slot",
    "api_keys": "id",
    "adapters": "name",
}


def _digest(key_id: str) -> str:
    return hashlib.sha256(f"ljk_secret_of_{key_id}".encode()).hexdigest()


def seed(conn: psycopg.Connection) -> None:
    conn.execute("truncate api_keys, file_items, files, job_items, job_results, jobs, eval_schedule_slots,"
                 " eval_schedules, eval_case_results, eval_runs, eval_cases, eval_suite_versions, eval_suites,"
                 " adapters")
    for job_id, owner in JOBS.items():
        conn.execute("insert into jobs (id, owner, total, model) values (%s, %s, 2, 'm')", (job_id, owner))
        for idx, cid in enumerate(CUSTOM_IDS):
            conn.execute("insert into job_items (job_id, idx, custom_id, item) values (%s, %s, %s, %s)",
                         (job_id, idx, cid, json.dumps({"custom_id": cid, "prompt": f"secret of {job_id}"})))
        conn.execute(
            "insert into job_results (job_id, custom_id, status, text, error, prompt_tokens, completion_tokens)"
            " values (%s, 'c0', 'ok', %s, null, 3, 5), (%s, 'c1', 'error', null, '{\"message\": \"x\"}', 3, 0)",
            (job_id, f"answer for {job_id}", job_id))
    for file_id, owner in FILES.items():
        conn.execute("insert into files (id, owner, lines) values (%s, %s, 2)", (file_id, owner))
        for idx, cid in enumerate(CUSTOM_IDS):
            conn.execute("insert into file_items (file_id, idx, custom_id, item) values (%s, %s, %s, %s)",
                         (file_id, idx, cid, json.dumps({"custom_id": cid, "prompt": f"secret of {file_id}"})))
    for owner in EVAL_OWNERS:
        suite, run, schedule = _eval_id(owner, "suite"), _eval_id(owner, "run-1"), _eval_id(owner, "nightly")
        conn.execute("insert into eval_suites (id, name, owner, version, cases) values (%s, 'essays', %s, %s, 2)",
                     (suite, owner, VERSION))
        conn.execute("insert into eval_suite_versions (suite_id, version, options, cases) values (%s, %s, %s, 2)",
                     (suite, VERSION, json.dumps({"id": "essays", "model": f"secret of {suite}"})))
        for idx, cid in enumerate(CUSTOM_IDS):
            conn.execute("insert into eval_cases (suite_id, version, idx, case_id, body) values (%s, %s, %s, %s, %s)",
                         (suite, VERSION, idx, cid, json.dumps({"id": cid, "prompt": f"secret of {suite}"})))
        conn.execute("insert into eval_runs (id, owner, suite_id, version, job_id, model, status)"
                     " values (%s, %s, %s, %s, %s, 'm', 'completed')",
                     (run, owner, suite, VERSION, _eval_id(owner, "eval-job-1")))
        conn.execute(
            "insert into eval_case_results (run_id, case_id, passed, score, outcomes, output, error)"
            " values (%s, 'c0', true, 1, '[]', %s, null), (%s, 'c1', false, 0, '[]', null, 'wrong')",
            (run, f"answer for {run}", run))
        conn.execute("insert into eval_schedules (id, owner, suite_id, model, cron, last_slot)"
                     " values (%s, %s, %s, 'm', '0 3 * * *', %s)", (schedule, owner, suite, SLOT))
        conn.execute("insert into eval_schedule_slots (schedule_id, slot, run_id) values (%s, %s, %s)",
                     (schedule, SLOT, run))
    for key_id, owner in API_KEYS.items():
        conn.execute("insert into api_keys (id, owner, digest, hint) values (%s, %s, %s, 'ljk_abc')",
                     (key_id, owner, _digest(key_id)))
    for name in ADAPTERS:
        conn.execute("insert into adapters (name, base_model, path) values (%s, 'org/base', %s)",
                     (name, f"/adapters/{name}"))


def expected(table: str, owner: str | None = None, *, everyone: bool = False) -> set[tuple]:
    """The keys of `table`'s seeded rows that belong to `owner` (or all of them)."""
    def mine(o: str | None) -> bool:
        return everyone or (owner is not None and o == owner)

    jobs = [j for j, o in JOBS.items() if mine(o)]
    files = [f for f, o in FILES.items() if mine(o)]
    suites = [s for s, o in SUITES.items() if mine(o)]
    runs = [r for r, o in RUNS.items() if mine(o)]
    schedules = [s for s, o in SCHEDULES.items() if mine(o)]
    return {
        "jobs": {(j,) for j in jobs},
        "job_results": {(j, c) for j in jobs for c in CUSTOM_IDS},
        "job_items": {(j, i) for j in jobs for i in range(len(CUSTOM_IDS))},
        "files": {(f,) for f in files},
        "file_items": {(f, i) for f in files for i in range(len(CUSTOM_IDS))},
        "eval_suites": {(s,) for s in suites},
        "eval_suite_versions": {(s, VERSION) for s in suites},
        "eval_cases": {(s, VERSION, i) for s in suites for i in range(len(CUSTOM_IDS))},
        "eval_runs": {(r,) for r in runs},
        "eval_case_results": {(r, c) for r in runs for c in CUSTOM_IDS},
        "eval_schedules": {(s,) for s in schedules},
        "eval_schedule_slots": {(s, SLOT) for s in schedules},
        "api_keys": {(k,) for k, o in API_KEYS.items() if mine(o)},
        "adapters": {(a,) for a in ADAPTERS} if everyone else set(),
    }[table]


def keys(conn: psycopg.Connection, table: str) -> set[tuple]:
    return set(conn.execute(f"select {KEY_COLUMNS[table]} from public.{table}").fetchall())


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every row of every table, as the superuser sees them."""
    assert conn.execute("select current_user").fetchone() == ("postgres",)
    return {t: conn.execute(f"select * from public.{t} order by {KEY_COLUMNS[t]}").fetchall()
            for t in KEY_COLUMNS}


# ## The requests: the claims of a Supabase access token, and of the anon key

def user(sub: str) -> dict:
    """The claims of a signed-in user's access token (what supabase-js sends)."""
    return {"sub": sub, "role": "authenticated", "aud": "authenticated", "iss": "https://x.supabase.co/auth/v1",
            "aal": "aal1", "session_id": "3c8e2f5a-1d4b-4e6f-8a9b-0c1d2e3f4a5b", "is_anonymous": False}


ANON_KEY = {"iss": "supabase", "ref": "xyzcompany", "role": "anon"}  # the anon key's claims
SERVICE_KEY = {"iss": "supabase", "ref": "xyzcompany", "role": "service_role"}


@contextmanager
def request(conn: psycopg.Connection, role: str, claims: dict | None) -> Iterator[psycopg.Connection]:
    """One request as PostgREST makes it: the role and the claims for this transaction only (here a
    savepoint, rolled back afterwards)."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"set local role {role}")
        if claims is not None:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        assert conn.execute("select current_user").fetchone() == (role,)
        yield conn
    assert conn.execute("select current_user").fetchone() == ("postgres",)


@pytest.fixture
def db(pg) -> Iterator[psycopg.Connection]:
    """A connection as the superuser with the seed in an open transaction, rolled back at the end."""
    conn = psycopg.connect(pg.url)
    try:
        seed(conn)
        yield conn
    finally:
        conn.rollback()
        conn.close()


def test_the_seed_is_what_the_tests_expect(db):
    # the superuser (RLS does not apply to it) sees every seeded row: the expectations below are sound
    for table in KEY_COLUMNS:
        assert keys(db, table) == expected(table, everyone=True) != set()
    # the counters' triggers ran as they do for a worker's writes
    assert db.execute("select completed, failed, staged, prompt_tokens from jobs where id = %s",
                      (JOB_U1,)).fetchone() == (1, 1, 2, 6)


def test_every_table_has_row_level_security(db):
    # Supabase grants anon and authenticated everything on new tables: a table without RLS is open to them
    rows = db.execute("select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                      " where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity").fetchall()
    assert rows == []


def test_the_only_policies_are_reads(db):
    # no insert, update, delete or all policy: nobody but the service role (bypassrls) writes
    rows = db.execute("select tablename, policyname, cmd from pg_policies where schemaname = 'public'"
                      " and cmd <> 'SELECT'").fetchall()
    assert rows == []
    assert {t for (t,) in db.execute("select tablename from pg_policies where schemaname = 'public'")} == set(TABLES)


def test_every_policy_is_for_signed_in_users_only(db):
    rows = db.execute("select tablename, policyname, roles::text[] from pg_policies where schemaname = 'public'"
                      " and roles::text[] <> array['authenticated']").fetchall()
    assert rows == []


# ## Reading


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("me", [U1, U2, U3], ids=["user1", "user2", "user-with-nothing"])
def test_a_signed_in_user_reads_only_their_own_rows(db, table, me):
    with request(db, "authenticated", user(me)) as r:
        got = keys(r, table)
    assert got == expected(table, me)
    assert bool(got) == (me != U3)
    # never another user's, the key owner's, or the unowned job's
    others = expected(table, everyone=True) - expected(table, me)
    assert others and not got & others


@pytest.mark.parametrize("table", TABLES)
def test_a_signed_in_user_sees_whole_rows_of_their_own(db, table):
    # what supabase-js's select("*") returns: every column of their rows, the same as the service sees
    col = KEY_COLUMNS[table]
    with request(db, "authenticated", user(U1)) as r:
        mine = r.execute(f"select * from public.{table} order by {col}").fetchall()
    owner_filter = {
        "jobs": "owner = %(u)s",
        "job_results": "job_id in (select id from jobs where owner = %(u)s)",
        "job_items": "job_id in (select id from jobs where owner = %(u)s)",
        "files": "owner = %(u)s",
        "file_items": "file_id in (select id from files where owner = %(u)s)",
        "eval_suites": "owner = %(u)s",
        "eval_suite_versions": "suite_id in (select id from eval_suites where owner = %(u)s)",
        "eval_cases": "suite_id in (select id from eval_suites where owner = %(u)s)",
        "eval_runs": "owner = %(u)s",
        "eval_case_results": "run_id in (select id from eval_runs where owner = %(u)s)",
        "eval_schedules": "owner = %(u)s",
        "eval_schedule_slots": "schedule_id in (select id from eval_schedules where owner = %(u)s)",
    }[table]
    assert mine == db.execute(f"select * from public.{table} where {owner_filter} order by {col}", {"u": U1}).fetchall()


@pytest.mark.parametrize(("table", "column"), [("jobs", "id"), ("job_results", "job_id")])
def test_what_a_realtime_subscriber_reads_through_its_filter(db, table, column):
    """supabase-js's `postgres_changes` with `filter: id=eq.<store_id>` (and the initial
    `.from(table).select("*").eq(column, store_id)`): Realtime sends a change to a subscriber only if
    the row is visible to the subscriber's role and claims, which is this query as that user."""
    query = f"select * from public.{table} where {column} = %s"
    n = 1 if table == "jobs" else len(CUSTOM_IDS)
    # the owner sees their job's row and results
    with request(db, "authenticated", user(U1)) as r:
        assert len(r.execute(query, (JOB_U1,)).fetchall()) == n
        # another user's job, the key owner's, the unowned one: nothing, even knowing the store id
        for other in (JOB_U2, JOB_ALICE, JOB_NONE):
            assert r.execute(query, (other,)).fetchall() == []
    with request(db, "authenticated", user(U2)) as r:
        assert r.execute(query, (JOB_U1,)).fetchall() == []
        assert len(r.execute(query, (JOB_U2,)).fetchall()) == n
    # an anon subscriber (the anon key, not signed in): nothing at all
    with request(db, "anon", ANON_KEY) as r:
        for job_id in JOBS:
            assert r.execute(query, (job_id,)).fetchall() == []


ANON_CLAIMS = {
    "no-claims": None,
    "anon-key": ANON_KEY,
    # the role is anon, but the claims name a real owner: the policies are for `authenticated` only
    "forged-owner-sub": user(U1),
}


@pytest.mark.parametrize(("table", "claims"), [
    pytest.param(t, c, id=f"{t}-{c}") for t in TABLES for c in ANON_CLAIMS
])
def test_anon_reads_nothing(db, table, claims):
    with request(db, "anon", ANON_CLAIMS[claims]) as r:
        # anon does hold Supabase's grant: the empty answer is row-level security's doing
        assert r.execute("select has_table_privilege(%s, 'select')", (f"public.{table}",)).fetchone() == (True,)
        assert keys(r, table) == set()


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("claims", [None, {"role": "authenticated", "aud": "authenticated"}],
                         ids=["no-claims", "claims-without-sub"])
def test_authenticated_without_a_user_reads_nothing(db, table, claims):
    with request(db, "authenticated", claims) as r:
        assert r.execute("select auth.uid()").fetchone() == (None,)
        assert keys(r, table) == set()


@pytest.mark.parametrize("table", TABLES)
def test_a_key_owners_name_is_never_a_signed_in_user(db, table):
    # a token whose sub is not a uuid (Supabase's never is) does not reach 'alice''s rows: auth.uid() fails
    with request(db, "authenticated", user(ALICE)) as r, pytest.raises(psycopg.errors.InvalidTextRepresentation):
        keys(r, table)


# ## Writing: nobody but the service role

CLIENTS = {
    "anon": ("anon", ANON_KEY),
    "anon-with-owner-claims": ("anon", user(U1)),
    "authenticated-owner": ("authenticated", user(U1)),
}

#: a row each client might try to add: its own (user 1's job, result, item, file, line, suite, version, case,
#: run, case result, schedule, slot), one that would otherwise satisfy every constraint
INSERT = {
    "jobs": ("insert into jobs (id, owner) values (%s, %s)", (scoped_id(U1, "new"), U1)),
    "job_results": ("insert into job_results (job_id, custom_id, status, text) values (%s, 'c9', 'ok', 'forged')",
                    (JOB_U1,)),
    "job_items": ("insert into job_items (job_id, idx, custom_id, item) values (%s, 9, 'c9', '{}')", (JOB_U1,)),
    "files": ("insert into files (id, owner) values ('file-new', %s)", (U1,)),
    "file_items": ("insert into file_items (file_id, idx, custom_id, item) values ('file-u1', 9, 'c9', '{}')", ()),
    "eval_suites": ("insert into eval_suites (id, name, owner, version, cases) values (%s, 'new', %s, %s, 0)",
                    (_eval_id(U1, "new-suite"), U1, NEW_VERSION)),
    "eval_suite_versions": ("insert into eval_suite_versions (suite_id, version, options, cases)"
                            " values (%s, %s, '{}', 0)", (SUITE_U1, NEW_VERSION)),
    "eval_cases": ("insert into eval_cases (suite_id, version, idx, case_id, body) values (%s, %s, 9, 'c9', '{}')",
                   (SUITE_U1, VERSION)),
    "eval_runs": ("insert into eval_runs (id, owner, suite_id, version, job_id) values (%s, %s, %s, %s, %s)",
                  (_eval_id(U1, "new-run"), U1, SUITE_U1, VERSION, _eval_id(U1, "new-job"))),
    "eval_case_results": ("insert into eval_case_results (run_id, case_id, passed, score, outcomes)"
                          " values (%s, 'c9', true, 1, '[]')", (RUN_U1,)),
    "eval_schedules": ("insert into eval_schedules (id, owner, suite_id, cron) values (%s, %s, %s, '0 4 * * *')",
                       (_eval_id(U1, "new-schedule"), U1, SUITE_U1)),
    "eval_schedule_slots": ("insert into eval_schedule_slots (schedule_id, slot, run_id) values (%s, %s, %s)",
                            (SCHEDULE_U1, NEW_SLOT, _eval_id(U1, "new-run"))),
    "api_keys": ("insert into api_keys (id, owner, digest) values ('key_89abcdef', %s, %s)", (U1, "f" * 64)),
    "adapters": ("insert into adapters (name, base_model, path) values ('lora-new', %s, '/x')", (U1,)),
}
#: user 1's own rows, changed
UPDATE = {
    "jobs": ("update jobs set status = 'cancelled', owner = %s where id = %s", (U2, JOB_U1)),
    "job_results": ("update job_results set text = 'forged', status = 'ok' where job_id = %s", (JOB_U1,)),
    "job_items": ("update job_items set item = '{}' where job_id = %s", (JOB_U1,)),
    "files": ("update files set status = 'error', owner = %s where id = 'file-u1'", (U2,)),
    "file_items": ("update file_items set item = '{}' where file_id = 'file-u1'", ()),
    "eval_suites": ("update eval_suites set name = 'forged', owner = %s where id = %s", (U2, SUITE_U1)),
    "eval_suite_versions": ("update eval_suite_versions set options = '{}' where suite_id = %s", (SUITE_U1,)),
    "eval_cases": ("update eval_cases set body = '{}' where suite_id = %s", (SUITE_U1,)),
    "eval_runs": ("update eval_runs set status = 'cancelled', owner = %s where id = %s", (U2, RUN_U1)),
    "eval_case_results": ("update eval_case_results set passed = true, score = 1 where run_id = %s", (RUN_U1,)),
    "eval_schedules": ("update eval_schedules set enabled = false, owner = %s where id = %s", (U2, SCHEDULE_U1)),
    "eval_schedule_slots": ("update eval_schedule_slots set run_id = 'forged' where schedule_id = %s", (SCHEDULE_U1,)),
    "api_keys": ("update api_keys set revoked_at = now() where owner = %s", (U1,)),
    "adapters": ("update adapters set path = %s where name = 'lora-a'", ("/forged",)),
}
#: user 1's own rows, deleted
DELETE = {
    "jobs": ("delete from jobs where id = %s", (JOB_U1,)),
    "job_results": ("delete from job_results where job_id = %s", (JOB_U1,)),
    "job_items": ("delete from job_items where job_id = %s", (JOB_U1,)),
    "files": ("delete from files where id = 'file-u1'", ()),
    "file_items": ("delete from file_items where file_id = 'file-u1'", ()),
    "eval_suites": ("delete from eval_suites where id = %s", (SUITE_U1,)),
    "eval_suite_versions": ("delete from eval_suite_versions where suite_id = %s", (SUITE_U1,)),
    "eval_cases": ("delete from eval_cases where suite_id = %s", (SUITE_U1,)),
    "eval_runs": ("delete from eval_runs where id = %s", (RUN_U1,)),
    "eval_case_results": ("delete from eval_case_results where run_id = %s", (RUN_U1,)),
    "eval_schedules": ("delete from eval_schedules where id = %s", (SCHEDULE_U1,)),
    "eval_schedule_slots": ("delete from eval_schedule_slots where schedule_id = %s", (SCHEDULE_U1,)),
    "api_keys": ("delete from api_keys where owner = %s", (U1,)),
    "adapters": ("delete from adapters where name = %s", ("lora-a",)),
}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("table", TABLES)
def test_clients_cannot_insert(db, table, client):
    role, claims = CLIENTS[client]
    sql, params = INSERT[table]
    before = snapshot(db)
    with request(db, role, claims) as r, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        r.execute(sql, params)
    # the role holds the INSERT privilege (Supabase's default grant): row-level security refuses the row
    assert f'new row violates row-level security policy for table "{table}"' in str(refused.value)
    assert snapshot(db) == before


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("statement", ["update", "delete", "update-all", "delete-all"])
def test_clients_cannot_change_or_delete_rows(db, table, client, statement):
    role, claims = CLIENTS[client]
    sql, params = (UPDATE if statement.startswith("update") else DELETE)[table]
    if statement.endswith("-all"):  # no where clause: every row of the table
        sql = sql.split(" where ")[0]
        params = params[:sql.count("%s")]
    before = snapshot(db)
    with request(db, role, claims) as r:
        assert r.execute(sql, params).rowcount == 0
        r.execute("reset role")  # back to the superuser, inside the same request: was anything changed?
        assert snapshot(r) == before
    assert snapshot(db) == before


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("table", [*TABLES, *SERVICE_ONLY])
def test_clients_cannot_truncate(db, table, client):
    role, claims = CLIENTS[client]
    before = snapshot(db)
    with request(db, role, claims) as r, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        r.execute(f"truncate public.{table} cascade")
    assert f"permission denied for table {table}" in str(refused.value)
    assert snapshot(db) == before


# ## api_keys and adapters: the service role's alone


@pytest.mark.parametrize("table", SERVICE_ONLY)
@pytest.mark.parametrize("client", [*CLIENTS, "authenticated-key-owner-as-user", "authenticated-no-claims"])
@pytest.mark.parametrize("statement", ["select", "insert", "update", "delete"])
def test_service_only_tables_are_out_of_clients_reach(db, table, client, statement):
    # not even the user a key was made for (key_4567cdef's owner is U1's id) may read it
    role, claims = {**CLIENTS, "authenticated-key-owner-as-user": ("authenticated", user(U1)),
                    "authenticated-no-claims": ("authenticated", None)}[client]
    sql, params = {"select": (f"select * from {table}", ()), "insert": INSERT[table],
                   "update": UPDATE[table], "delete": DELETE[table]}[statement]
    before = snapshot(db)
    with request(db, role, claims) as r, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        r.execute(sql, params)
    assert f"permission denied for table {table}" in str(refused.value)
    assert snapshot(db) == before


# ## The service role: reads and writes everything (bypassrls)


@pytest.mark.parametrize("table", [*TABLES, *SERVICE_ONLY])
def test_the_service_role_reads_every_row(db, table):
    with request(db, "service_role", SERVICE_KEY) as r:
        assert keys(r, table) == expected(table, everyone=True)


#: what the service role's INSERT, UPDATE and DELETE above touch: (rows updated, rows deleted, the keys left)
SERVICE_WRITES = {
    "jobs": (1, 1, expected("jobs", everyone=True) - {(JOB_U1,)} | {(scoped_id(U1, "new"),)}),
    "job_results": (3, 3, expected("job_results", everyone=True) - {(JOB_U1, c) for c in CUSTOM_IDS}),
    "job_items": (3, 3, expected("job_items", everyone=True) - {(JOB_U1, i) for i in range(len(CUSTOM_IDS))}),
    "files": (1, 1, expected("files", everyone=True) - {("file-u1",)} | {("file-new",)}),
    "file_items": (3, 3, expected("file_items", everyone=True) - {("file-u1", i) for i in range(len(CUSTOM_IDS))}),
    "eval_suites": (1, 1, expected("eval_suites", everyone=True) - {(SUITE_U1,)} | {(_eval_id(U1, "new-suite"),)}),
    "eval_suite_versions": (2, 2, expected("eval_suite_versions", everyone=True) - {(SUITE_U1, VERSION)}),
    "eval_cases": (3, 3, expected("eval_cases", everyone=True)
                   - {(SUITE_U1, VERSION, i) for i in range(len(CUSTOM_IDS))}),
    "eval_runs": (1, 1, expected("eval_runs", everyone=True) - {(RUN_U1,)} | {(_eval_id(U1, "new-run"),)}),
    "eval_case_results": (3, 3, expected("eval_case_results", everyone=True) - {(RUN_U1, c) for c in CUSTOM_IDS}),
    "eval_schedules": (1, 1, expected("eval_schedules", everyone=True) - {(SCHEDULE_U1,)}
                       | {(_eval_id(U1, "new-schedule"),)}),
    "eval_schedule_slots": (2, 2, expected("eval_schedule_slots", everyone=True) - {(SCHEDULE_U1, SLOT)}),
    "api_keys": (2, 2, expected("api_keys", everyone=True) - {("key_4567cdef",)}),
    "adapters": (1, 1, expected("adapters", everyone=True) - {("lora-a",)} | {("lora-new",)}),
}


@pytest.mark.parametrize("table", [*TABLES, *SERVICE_ONLY])
def test_the_service_role_writes(db, table):
    updated, deleted, left = SERVICE_WRITES[table]
    with request(db, "service_role", SERVICE_KEY) as r:
        assert r.execute(*INSERT[table]).rowcount == 1
        assert r.execute(*UPDATE[table]).rowcount == updated
        assert r.execute(*DELETE[table]).rowcount == deleted
        r.execute("reset role")
        assert keys(r, table) == left
