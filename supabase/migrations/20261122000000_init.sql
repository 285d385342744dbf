-- llm-jobs schema: jobs and their per-item results.
-- Applies to plain PostgreSQL 15 and to Supabase. Supabase-only parts (auth.uid(), the
-- supabase_realtime publication) are guarded so the file also applies where they are absent.

do $$ begin
  create type public.job_status as enum ('queued', 'running', 'completed', 'failed', 'cancelled');
exception when duplicate_object then null;
end $$;

create table if not exists public.jobs (
  id          text primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
  status      public.job_status not null default 'queued',
  model       text,
  total       integer not null default 0 check (total >= 0),
  -- kept right by the triggers below: never written by clients, never double-counted
  completed   integer not null default 0,
  failed      integer not null default 0,
  created_at  timestamptz not null default now(),
  started_at  timestamptz,
  finished_at timestamptz,
  updated_at  timestamptz not null default now(),
  error       text,
  summary     jsonb,
  metadata    jsonb not null default '{}'::jsonb,
  -- the Supabase user who may read this job (row-level security)
  owner       uuid
);

create table if not exists public.job_results (
  job_id            text not null references public.jobs (id) on delete cascade,
  custom_id         text not null,
  status            text not null check (status in ('ok', 'error')),
  text              text,
  parsed            jsonb,
  error             jsonb,
  finish_reason     text,
  prompt_tokens     integer,
  completion_tokens integer,
  latency_ms        double precision,
  created_at        timestamptz not null default now(),
  primary key (job_id, custom_id)
);

-- The API lists a user's recent jobs, jobs by status, and a job's failed items.
create index if not exists jobs_owner_created_idx on public.jobs (owner, created_at desc);
create index if not exists jobs_status_idx on public.jobs (status, updated_at desc);
create index if not exists job_results_job_status_idx on public.job_results (job_id, status);

-- ## Counters
-- One statement-level trigger per event: a chunk of 100 rows updates its job once.
-- A row written again with the same status changes nothing, so a replayed chunk is not
-- double-counted; a row whose status changes moves between the counters.

create or replace function public.job_results_count_inserted() returns trigger
language plpgsql as $$
begin
  update public.jobs j
     set completed = j.completed + c.ok, failed = j.failed + c.err, updated_at = now()
    from (select job_id, count(*) filter (where status = 'ok') as ok,
                 count(*) filter (where status = 'error') as err
            from new_rows group by job_id) c
   where j.id = c.job_id;
  return null;
end $$;

create or replace function public.job_results_count_updated() returns trigger
language plpgsql as $$
begin
  update public.jobs j
     set completed = j.completed + c.ok, failed = j.failed + c.err, updated_at = now()
    from (select n.job_id,
                 sum((n.status = 'ok')::int - (o.status = 'ok')::int) as ok,
                 sum((n.status = 'error')::int - (o.status = 'error')::int) as err
            from new_rows n join old_rows o using (job_id, custom_id)
           where n.status is distinct from o.status
           group by n.job_id) c
   where j.id = c.job_id;
  return null;
end $$;

create or replace function public.job_results_count_deleted() returns trigger
language plpgsql as $$
begin
  update public.jobs j
     set completed = j.completed - c.ok, failed = j.failed - c.err, updated_at = now()
    from (select job_id, count(*) filter (where status = 'ok') as ok,
                 count(*) filter (where status = 'error') as err
            from old_rows group by job_id) c
   where j.id = c.job_id;
  return null;
end $$;

drop trigger if exists job_results_inserted on public.job_results;
create trigger job_results_inserted after insert on public.job_results
  referencing new table as new_rows for each statement execute function public.job_results_count_inserted();
drop trigger if exists job_results_updated on public.job_results;
create trigger job_results_updated after update on public.job_results
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.job_results_count_updated();
drop trigger if exists job_results_deleted on public.job_results;
create trigger job_results_deleted after delete on public.job_results
  referencing old table as old_rows for each statement execute function public.job_results_count_deleted();

create or replace function public.jobs_touch() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end $$;

drop trigger if exists jobs_touch on public.jobs;
create trigger jobs_touch before update on public.jobs
  for each row execute function public.jobs_touch();

-- ## Row-level security
-- The service role (the workers) bypasses RLS; a signed-in user reads only their own jobs.
alter table public.jobs enable row level security;
alter table public.job_results enable row level security;

do $$ begin
  if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'auth' and p.proname = 'uid') then
    execute 'drop policy if exists jobs_owner_read on public.jobs';
    execute 'create policy jobs_owner_read on public.jobs for select using (owner = auth.uid())';
    execute 'drop policy if exists job_results_owner_read on public.job_results';
    execute 'create policy job_results_owner_read on public.job_results for select using (
               exists (select 1 from public.jobs j where j.id = job_id and j.owner = auth.uid()))';
  end if;
end $$;

-- ## Realtime
-- A frontend subscribes to its job's row (progress) and results; skipped where the
-- publication does not exist (plain PostgreSQL).
do $$ begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                    and schemaname = 'public' and tablename = 'jobs') then
      alter publication supabase_realtime add table public.jobs;
    end if;
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                    and schemaname = 'public' and tablename = 'job_results') then
      alter publication supabase_realtime add table public.job_results;
    end if;
  end if;
end $$;
