"""What Supabase's client roles may do to the tables (issue 11, finding 8.3).

On Supabase, `anon` and `authenticated` (the roles a browser's key maps to) get every privilege on
new tables in `public` by default; row-level security then limits what they read and write. TRUNCATE
is not subject to row-level security, so the migrations take it away from both. The test cluster
(testkit/pg.py) creates those roles with Supabase's default privileges before it applies the
migrations, as a Supabase project has them.
"""

from __future__ import annotations

import psycopg
import pytest

CLIENT_ROLES = ("anon", "authenticated")
TABLES = ("jobs", "job_results", "job_items", "files", "file_items")


@pytest.mark.parametrize("role", CLIENT_ROLES)
@pytest.mark.parametrize("table", TABLES)
def test_client_roles_cannot_truncate(pg, role, table):
    with psycopg.connect(pg.url) as conn:  # one transaction, rolled back whatever happens
        assert conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone(), \
            f"the test cluster has no {role} role"
        conn.execute(f"set local role {role}")
        # the role does hold Supabase's grants (so the refusal below is the migration's doing)
        assert conn.execute("select has_table_privilege(%s, %s)", (table, "select")).fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"truncate public.{table} cascade")
        conn.rollback()


@pytest.mark.parametrize("table", ["job_items", "files", "file_items"])
def test_staged_tables_have_row_level_security(pg, table):
    # like job_results: the service role bypasses it; on Supabase, owners read their own rows
    assert pg.query("select relrowsecurity from pg_class where oid = %s::regclass", f"public.{table}") == [(True,)]


def test_the_service_role_keeps_its_privileges(pg):
    # the workers and the API write as the service role (or the owner): nothing is taken from them
    rows = pg.query("select has_table_privilege('service_role', 'public.jobs', 'insert, update, select')")
    assert rows == [(True,)]
