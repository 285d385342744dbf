-- Evaluation suites, runs, case results and schedules (issue 14; shared/evals/records.py).
--
-- A suite is kept by its stored id (owner-scoped like a job's) with every content-hashed version
-- it has had, and each version's cases. A run is one version run once, as an ordinary job
-- (`job_id`); a case's result is written once per run (insert, do nothing on a repeat), so a
-- resumed run never scores a case twice. A schedule's due slots are claimed in
-- eval_schedule_slots: the primary key lets exactly one ticker claim a slot, however many tick.
-- Guarded, so the file also applies to plain PostgreSQL 15+, where Supabase's parts are absent.

create table if not exists public.eval_suites (
  id         text primary key,
  -- the suite's own id, as written in its file
  name       text not null,
  owner      text,
  -- the latest version's content hash, and its case count
  version    text not null check (version ~ '^[0-9a-f]{16}$'),
  cases      integer not null check (cases >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index if not exists eval_suites_owner_idx on public.eval_suites (owner, updated_at desc);

create table if not exists public.eval_suite_versions (
  suite_id   text not null references public.eval_suites (id) on delete cascade,
  version    text not null check (version ~ '^[0-9a-f]{16}$'),
  -- the suite as written, without its cases
  options    jsonb not null,
  cases      integer not null check (cases >= 0),
  created_at timestamptz not null default now(),
  primary key (suite_id, version)
);

create table if not exists public.eval_cases (
  suite_id text not null,
  version  text not null,
  idx      integer not null check (idx >= 0),
  case_id  text not null,
  -- the case as written
  body     jsonb not null,
  primary key (suite_id, version, idx),
  foreign key (suite_id, version) references public.eval_suite_versions (suite_id, version) on delete cascade
);

create unique index if not exists eval_cases_case_id_idx on public.eval_cases (suite_id, version, case_id);

create table if not exists public.eval_runs (
  id           text primary key,
  owner        text,
  suite_id     text not null references public.eval_suites (id) on delete cascade,
  version      text not null,
  -- the llm-jobs job that runs the cases
  job_id       text not null,
  model        text,
  adapter      text,
  settings     jsonb not null default '{}',
  git_rev      text,
  baseline     text,
  schedule_id  text,
  slot         timestamptz,
  status       text not null default 'queued'
               check (status in ('queued', 'running', 'completed', 'failed', 'cancelled')),
  scores       jsonb,
  regressions  jsonb,
  created_at   timestamptz not null default now(),
  finished_at  timestamptz
);

create index if not exists eval_runs_suite_created_idx on public.eval_runs (suite_id, created_at desc, id desc);

create table if not exists public.eval_case_results (
  run_id         text not null references public.eval_runs (id) on delete cascade,
  case_id        text not null,
  passed         boolean not null,
  score          double precision not null,
  -- each assertion's outcome
  outcomes       jsonb not null,
  label          double precision,
  expected_label double precision,
  output         text,
  error          text,
  created_at     timestamptz not null default now(),
  primary key (run_id, case_id)
);

create table if not exists public.eval_schedules (
  id         text primary key,
  owner      text,
  suite_id   text not null references public.eval_suites (id) on delete cascade,
  model      text,
  cron       text not null check (length(cron) between 1 and 200),
  enabled    boolean not null default true,
  created_at timestamptz not null default now(),
  last_slot  timestamptz
);

create table if not exists public.eval_schedule_slots (
  schedule_id text not null references public.eval_schedules (id) on delete cascade,
  slot        timestamptz not null,
  run_id      text not null,
  claimed_at  timestamptz not null default now(),
  primary key (schedule_id, slot)
);

-- ## Row-level security: a signed-in user reads their own suites, runs, results and schedules; nobody but
-- the service role writes (no insert, update or delete policy exists for anon or authenticated).
alter table public.eval_suites enable row level security;
alter table public.eval_suite_versions enable row level security;
alter table public.eval_cases enable row level security;
alter table public.eval_runs enable row level security;
alter table public.eval_case_results enable row level security;
alter table public.eval_schedules enable row level security;
alter table public.eval_schedule_slots enable row level security;

do $$ begin
  if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'auth' and p.proname = 'uid') then
    execute 'drop policy if exists eval_suites_owner_read on public.eval_suites';
    execute 'create policy eval_suites_owner_read on public.eval_suites for select to authenticated
               using (owner = (select auth.uid())::text)';
    execute 'drop policy if exists eval_suite_versions_owner_read on public.eval_suite_versions';
    execute 'create policy eval_suite_versions_owner_read on public.eval_suite_versions for select to authenticated
               using (exists (select 1 from public.eval_suites s where s.id = suite_id
                                and s.owner = (select auth.uid())::text))';
    execute 'drop policy if exists eval_cases_owner_read on public.eval_cases';
    execute 'create policy eval_cases_owner_read on public.eval_cases for select to authenticated
               using (exists (select 1 from public.eval_suites s where s.id = suite_id
                                and s.owner = (select auth.uid())::text))';
    execute 'drop policy if exists eval_runs_owner_read on public.eval_runs';
    execute 'create policy eval_runs_owner_read on public.eval_runs for select to authenticated
               using (owner = (select auth.uid())::text)';
    execute 'drop policy if exists eval_case_results_owner_read on public.eval_case_results';
    execute 'create policy eval_case_results_owner_read on public.eval_case_results for select to authenticated
               using (exists (select 1 from public.eval_runs r where r.id = run_id
                                and r.owner = (select auth.uid())::text))';
    execute 'drop policy if exists eval_schedules_owner_read on public.eval_schedules';
    execute 'create policy eval_schedules_owner_read on public.eval_schedules for select to authenticated
               using (owner = (select auth.uid())::text)';
    execute 'drop policy if exists eval_schedule_slots_owner_read on public.eval_schedule_slots';
    execute 'create policy eval_schedule_slots_owner_read on public.eval_schedule_slots for select to authenticated
               using (exists (select 1 from public.eval_schedules s where s.id = schedule_id
                                and s.owner = (select auth.uid())::text))';
  end if;
end $$;

-- Supabase's client roles may not TRUNCATE them (TRUNCATE is not subject to RLS; see
-- 20261123000000_revoke_truncate.sql).
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke truncate on table public.eval_suites, public.eval_suite_versions, public.eval_cases, '
                     'public.eval_runs, public.eval_case_results, public.eval_schedules, '
                     'public.eval_schedule_slots from %I', r);
    end if;
  end loop;
end $$;
