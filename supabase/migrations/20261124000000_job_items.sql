-- A job's items live in the store, not in the transports (issue 12, "big jobs").
-- The API stages a job's items in batches; a worker reads its shard (an idx range) page by page.
-- Staging is idempotent on (job_id, idx): a re-sent batch changes nothing. `jobs.staged` counts
-- the items staged so far, kept by the database (a statement-level trigger, like the result
-- counters), so a batch sent twice is counted once.
-- Guarded, so the file also applies to plain PostgreSQL 15+, where Supabase's parts are absent.

create table if not exists public.job_items (
  job_id    text not null references public.jobs (id) on delete cascade,
  idx       integer not null check (idx >= 0),
  custom_id text not null,
  -- the Item as the wire carries it (Item.model_dump(mode="json", by_alias=True, exclude_none=True))
  item      jsonb not null,
  primary key (job_id, idx)
);

create unique index if not exists job_items_job_custom_id_idx on public.job_items (job_id, custom_id);

alter table public.jobs add column if not exists staged integer not null default 0;

comment on column public.jobs.staged is
  'items staged in job_items so far (kept by a trigger; a re-sent batch is counted once)';

create or replace function public.job_items_count_inserted() returns trigger
language plpgsql as $$
begin
  update public.jobs j set staged = j.staged + c.n
    from (select job_id, count(*) as n from new_rows group by job_id) c
   where j.id = c.job_id;
  return null;
end $$;

drop trigger if exists job_items_inserted on public.job_items;
create trigger job_items_inserted after insert on public.job_items
  referencing new table as new_rows for each statement execute function public.job_items_count_inserted();

-- ## Row-level security
-- As for job_results: the service role (the API, the workers) bypasses RLS; a signed-in user
-- reads only the items of their own jobs. No realtime: nobody follows items as they arrive.
alter table public.job_items enable row level security;

do $$ begin
  if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'auth' and p.proname = 'uid') then
    execute 'drop policy if exists job_items_owner_read on public.job_items';
    execute 'create policy job_items_owner_read on public.job_items for select using (
               exists (select 1 from public.jobs j where j.id = job_id and j.owner = auth.uid()))';
  end if;
end $$;

-- Supabase's client roles may not TRUNCATE it (TRUNCATE is not subject to RLS; see
-- 20261123000000_revoke_truncate.sql).
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke truncate on table public.job_items from %I', r);
    end if;
  end loop;
end $$;
