-- LoRA adapters (issue 15; shared/contracts/adapters.py, shared/stores/adapters.py).
--
-- The adapters the engines may serve over their base model, by name: what `llm-jobs adapters add` records
-- and what an engine lists at boot from its ADAPTERS_DIR. A job or an item names one (`adapter`); the
-- engine that runs the job finds its path here and loads it before any item runs. `path` is the adapter's
-- directory as the engine's machine sees it (a volume); `base_model` is the model it was trained on
-- (adapter_config.json's base_model_name_or_path), checked against the engine's model.
--
-- Only the service role (the API and the workers) reads or writes it: RLS is on and no policy lets anyone
-- else in, and the client roles' grants are taken back, as for api_keys.
-- Guarded, so the file also applies to plain PostgreSQL 15+, where Supabase's parts are absent.

create table if not exists public.adapters (
  name       text primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
  base_model text check (base_model is null or length(base_model) between 1 and 4096),
  path       text not null check (length(path) between 1 and 4096),
  created_at timestamptz not null default now()
);

alter table public.adapters enable row level security;

-- Supabase grants its client roles every privilege on new tables: take them back (RLS already keeps the
-- rows out of reach; TRUNCATE is not subject to RLS).
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke all on table public.adapters from %I', r);
    end if;
  end loop;
end $$;
