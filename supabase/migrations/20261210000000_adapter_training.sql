-- A trained adapter's record (issue 16; shared/contracts/adapters.py, shared/stores/adapters.py).
--
-- An adapter a training job made is listed with what made it, so `llm-jobs adapters list` can say how it did
-- and a later run can be compared or repeated:
--   config:  the training config it was made with (a JSON object: base model, LoRA shape, data, steps);
--   metrics: what its training measured (a JSON object: perplexities before and after, losses, steps, ...);
--   job_id:  the training job that made it.
-- All three are null for an adapter recorded by hand (`llm-jobs adapters add`) or found in an engine's
-- ADAPTERS_DIR. jsonb, so PostgREST and psycopg hand them back as objects; a check keeps them objects, as
-- the stores read them. job_id references nothing: a job's row may be deleted while its adapter is kept.
-- An engine's ADAPTERS_DIR never overwrites a row (it inserts only names not listed yet), so a trained
-- adapter's figures survive its directory being found again.
--
-- The table's RLS and revoked grants (20261209000000_adapters.sql) cover the new columns: still the service
-- role's alone. Guarded, so the file also applies again, and to plain PostgreSQL 15+.

alter table public.adapters
  add column if not exists config  jsonb check (config is null or jsonb_typeof(config) = 'object'),
  add column if not exists metrics jsonb check (metrics is null or jsonb_typeof(metrics) = 'object'),
  add column if not exists job_id  text check (job_id is null or job_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$');
