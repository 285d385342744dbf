-- Supabase's client roles may not TRUNCATE the job tables (issue 11, finding 8.3).
-- On Supabase, `anon` and `authenticated` get every privilege on new tables in `public` by
-- default, and row-level security limits what they read and write. TRUNCATE is not subject to
-- row-level security: with that default grant a browser's key could empty both tables.
-- The workers and the API write as the service role (or the owner), which keeps its privileges.
-- Guarded, so the file also applies to plain PostgreSQL, where these roles do not exist.

do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke truncate on table public.jobs, public.job_results from %I', r);
    end if;
  end loop;
end $$;
