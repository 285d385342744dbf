"""Row-level security as Supabase applies it (issue 13): a signed-in user reads only their own jobs,
results, items, files and file lines; `anon` reads nothing; nobody but the service role writes; nobody
but the service role touches `api_keys`.

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

TABLES = ("jobs", "job_results", "job_items", "files", "file_items")
KEY_COLUMNS = {
    "jobs": "id",
    "job_results": "job_id, custom_id",
    "job_items": "job_id, idx",
    "files": "id",
    "file_items": "file_id, idx",
    "api_keys": "id",
}


def _digest(key_id: str) -> str:
    return hashlib.sha256(f"ljk_secret_of_{key_id}".encode()).hexdigest()


def seed(conn: psycopg.Connection) -> None:
    conn.execute("truncate api_keys, file_items, files, job_items, job_results, jobs")
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
    for key_id, owner in API_KEYS.items():
        conn.execute("insert into api_keys (id, owner, digest, hint) values (%s, %s, %s, 'ljk_abc')",
                     (key_id, owner, _digest(key_id)))


def expected(table: str, owner: str | None = None, *, everyone: bool = False) -> set[tuple]:
    """The keys of `table`'s seeded rows that belong to `owner` (or all of them)."""
    def mine(o: str | None) -> bool:
        return everyone or (owner is not None and o == owner)

    jobs = [j for j, o in JOBS.items() if mine(o)]
    files = [f for f, o in FILES.items() if mine(o)]
    return {
        "jobs": {(j,) for j in jobs},
        "job_results": {(j, c) for j in jobs for c in CUSTOM_IDS},
        "job_items": {(j, i) for j in jobs for i in range(len(CUSTOM_IDS))},
        "files": {(f,) for f in files},
        "file_items": {(f, i) for f in files for i in range(len(CUSTOM_IDS))},
        "api_keys": {(k,) for k, o in API_KEYS.items() if mine(o)},
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

#: a row each client might try to add: its own (user 1's job, result, item, file, line)
INSERT = {
    "jobs": ("insert into jobs (id, owner) values (%s, %s)", (scoped_id(U1, "new"), U1)),
    "job_results": ("insert into job_results (job_id, custom_id, status, text) values (%s, 'c9', 'ok', 'forged')",
                    (JOB_U1,)),
    "job_items": ("insert into job_items (job_id, idx, custom_id, item) values (%s, 9, 'c9', '{}')", (JOB_U1,)),
    "files": ("insert into files (id, owner) values ('file-new', %s)", (U1,)),
    "file_items": ("insert into file_items (file_id, idx, custom_id, item) values ('file-u1', 9, 'c9', '{}')", ()),
    "api_keys": ("insert into api_keys (id, owner, digest) values ('key_89abcdef', %s, %s)", (U1, "f" * 64)),
}
#: user 1's own rows, changed
UPDATE = {
    "jobs": ("update jobs set status = 'cancelled', owner = %s where id = %s", (U2, JOB_U1)),
    "job_results": ("update job_results set text = 'forged', status = 'ok' where job_id = %s", (JOB_U1,)),
    "job_items": ("update job_items set item = '{}' where job_id = %s", (JOB_U1,)),
    "files": ("update files set status = 'error', owner = %s where id = 'file-u1'", (U2,)),
    "file_items": ("update file_items set item = '{}' where file_id = 'file-u1'", ()),
    "api_keys": ("update api_keys set revoked_at = now() where owner = %s", (U1,)),
}
#: user 1's own rows, deleted
DELETE = {
    "jobs": ("delete from jobs where id = %s", (JOB_U1,)),
    "job_results": ("delete from job_results where job_id = %s", (JOB_U1,)),
    "job_items": ("delete from job_items where job_id = %s", (JOB_U1,)),
    "files": ("delete from files where id = 'file-u1'", ()),
    "file_items": ("delete from file_items where file_id = 'file-u1'", ()),
    "api_keys": ("delete from api_keys where owner = %s", (U1,)),
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
@pytest.mark.parametrize("table", [*TABLES, "api_keys"])
def test_clients_cannot_truncate(db, table, client):
    role, claims = CLIENTS[client]
    before = snapshot(db)
    with request(db, role, claims) as r, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        r.execute(f"truncate public.{table} cascade")
    assert f"permission denied for table {table}" in str(refused.value)
    assert snapshot(db) == before


# ## api_keys: the service role's alone


@pytest.mark.parametrize("client", [*CLIENTS, "authenticated-key-owner-as-user", "authenticated-no-claims"])
@pytest.mark.parametrize("statement", ["select", "insert", "update", "delete"])
def test_api_keys_are_out_of_clients_reach(db, client, statement):
    # not even the user a key was made for (key_4567cdef's owner is U1's id) may read it
    role, claims = {**CLIENTS, "authenticated-key-owner-as-user": ("authenticated", user(U1)),
                    "authenticated-no-claims": ("authenticated", None)}[client]
    sql, params = {"select": ("select * from api_keys", ()), "insert": INSERT["api_keys"],
                   "update": UPDATE["api_keys"], "delete": DELETE["api_keys"]}[statement]
    before = snapshot(db)
    with request(db, role, claims) as r, pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        r.execute(sql, params)
    assert "permission denied for table api_keys" in str(refused.value)
    assert snapshot(db) == before


# ## The service role: reads and writes everything (bypassrls)


@pytest.mark.parametrize("table", [*TABLES, "api_keys"])
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
    "api_keys": (2, 2, expected("api_keys", everyone=True) - {("key_4567cdef",)}),
}


@pytest.mark.parametrize("table", [*TABLES, "api_keys"])
def test_the_service_role_writes(db, table):
    updated, deleted, left = SERVICE_WRITES[table]
    with request(db, "service_role", SERVICE_KEY) as r:
        assert r.execute(*INSERT[table]).rowcount == 1
        assert r.execute(*UPDATE[table]).rowcount == updated
        assert r.execute(*DELETE[table]).rowcount == deleted
        r.execute("reset role")
        assert keys(r, table) == left
