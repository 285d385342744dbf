-- Uploaded files (issue 12; OpenAI's Files API, `purpose=batch`): a file's record, and its lines as
-- they were read (shared/contracts/files.py). A line is an item, or `{"rejected": ...}` for one that
-- was refused, the same encoding as job_items. A batch made from a file copies its lines into the
-- job's items inside the database (`copy_file_items`), so `jobs.staged` counts them.
-- Staging is idempotent on (file_id, idx): a re-sent batch changes nothing.
-- Guarded, so the file also applies to plain PostgreSQL 15+, where Supabase's parts are absent.

create table if not exists public.files (
  id             text primary key,
  purpose        text not null default 'batch',
  filename       text not null default 'input.jsonl',
  bytes          bigint not null default 0 check (bytes >= 0),
  -- lines staged (items and rejections), and those refused
  lines          integer not null default 0 check (lines >= 0),
  rejected       integer not null default 0 check (rejected >= 0),
  status         text not null default 'uploaded' check (status in ('uploaded', 'processed', 'error')),
  status_details text,
  -- who uploaded it (the API's caller); null when unknown
  owner          text,
  created_at     timestamptz not null default now()
);

create index if not exists files_owner_created_idx on public.files (owner, created_at desc);

create table if not exists public.file_items (
  file_id   text not null references public.files (id) on delete cascade,
  idx       integer not null check (idx >= 0),
  custom_id text not null,
  -- the Item as the wire carries it, or {"rejected": <the Rejection>}
  item      jsonb not null,
  primary key (file_id, idx)
);

create unique index if not exists file_items_file_custom_id_idx on public.file_items (file_id, custom_id);

-- ## Row-level security
-- The service role (the API) bypasses RLS; on Supabase a signed-in user reads only their own files.
alter table public.files enable row level security;
alter table public.file_items enable row level security;

do $$ begin
  if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'auth' and p.proname = 'uid') then
    execute 'drop policy if exists files_owner_read on public.files';
    execute 'create policy files_owner_read on public.files for select using (owner = auth.uid()::text)';
    execute 'drop policy if exists file_items_owner_read on public.file_items';
    execute 'create policy file_items_owner_read on public.file_items for select using (
               exists (select 1 from public.files f where f.id = file_id and f.owner = auth.uid()::text))';
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
      execute format('revoke truncate on table public.files, public.file_items from %I', r);
    end if;
  end loop;
end $$;
