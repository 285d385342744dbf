-- Owners and API keys (issue 13).
--
-- An owner is text: a Supabase user's id (the `sub` of their access token, a uuid as text) or a name
-- given to an API key (`llm-jobs keys create --owner NAME`). jobs.owner was a uuid; it becomes text,
-- so that both kinds fit, and the row-level security policies compare it with `auth.uid()::text`.
-- The API writes owner on every job, file and batch; a job with no owner (an admin key's, or one
-- sent straight to a platform) is read by the service role only.
--
-- api_keys keeps owners' keys as SHA-256 digests (the key itself is shown once, when it is made).
-- Only the service role (the API) reads or writes it: RLS is on and no policy lets anyone else in.
-- Guarded, so the file also applies to plain PostgreSQL 15+, where Supabase's parts are absent.

-- The policies name jobs.owner: PostgreSQL will not change a column's type under a policy.
drop policy if exists jobs_owner_read on public.jobs;
drop policy if exists job_results_owner_read on public.job_results;
drop policy if exists job_items_owner_read on public.job_items;

alter table public.jobs alter column owner type text using owner::text;

-- ## Row-level security: a signed-in user reads their own jobs, results and items; nobody but the service
-- role writes (no insert, update or delete policy exists for anon or authenticated).
do $$ begin
  if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'auth' and p.proname = 'uid') then
    execute 'create policy jobs_owner_read on public.jobs for select to authenticated
               using (owner = (select auth.uid())::text)';
    execute 'create policy job_results_owner_read on public.job_results for select to authenticated using (
               exists (select 1 from public.jobs j where j.id = job_id and j.owner = (select auth.uid())::text))';
    execute 'create policy job_items_owner_read on public.job_items for select to authenticated using (
               exists (select 1 from public.jobs j where j.id = job_id and j.owner = (select auth.uid())::text))';
  end if;
end $$;

create table if not exists public.api_keys (
  -- the key's public id (`key_...`): what `llm-jobs keys list` shows and `keys revoke` takes
  id         text primary key check (id ~ '^key_[0-9a-f]{8,32}$'),
  owner      text not null check (length(owner) between 1 and 128),
  -- SHA-256 of the key, hex; the key itself is never stored
  digest     text not null unique check (digest ~ '^[0-9a-f]{64}$'),
  -- a few first characters of the key, to recognise it in a list
  hint       text not null default '',
  label      text,
  created_at timestamptz not null default now(),
  revoked_at timestamptz
);

create index if not exists api_keys_owner_idx on public.api_keys (owner, created_at desc);

alter table public.api_keys enable row level security;

-- The API lists an owner's jobs newest first, a page at a time: (owner, created_at, id) keyset.
create index if not exists jobs_owner_created_id_idx on public.jobs (owner, created_at desc, id desc);
create index if not exists jobs_created_id_idx on public.jobs (created_at desc, id desc);

-- Supabase grants its client roles every privilege on new tables: take them back from api_keys
-- (RLS already keeps the rows out of reach; TRUNCATE is not subject to RLS).
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke all on table public.api_keys from %I', r);
    end if;
  end loop;
end $$;
