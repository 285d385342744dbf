-- The jobs row counts its results' tokens (issue 12, "big jobs"): a job of several shards rolls up
-- its summary from the store (handler/rollup.py), so the tokens are kept where the result counters
-- are, by the same statement-level triggers: a result row counts its prompt_tokens and
-- completion_tokens once; written again with the same values it changes nothing (a replayed chunk is
-- not double-counted), written with others it moves the counters by the difference, deleted it is
-- taken off.
-- Guarded, so the file also applies to plain PostgreSQL 15+ and can run again.

alter table public.jobs add column if not exists prompt_tokens bigint not null default 0;
alter table public.jobs add column if not exists completion_tokens bigint not null default 0;

comment on column public.jobs.prompt_tokens is
  'sum of job_results.prompt_tokens (kept by a trigger; a re-written chunk is counted once)';
comment on column public.jobs.completion_tokens is
  'sum of job_results.completion_tokens (kept by a trigger; a re-written chunk is counted once)';

create or replace function public.job_results_count_inserted() returns trigger
language plpgsql as $$
begin
  update public.jobs j
     set completed = j.completed + c.ok, failed = j.failed + c.err,
         prompt_tokens = j.prompt_tokens + c.pt, completion_tokens = j.completion_tokens + c.ct,
         updated_at = now()
    from (select job_id, count(*) filter (where status = 'ok') as ok,
                 count(*) filter (where status = 'error') as err,
                 coalesce(sum(prompt_tokens), 0) as pt, coalesce(sum(completion_tokens), 0) as ct
            from new_rows group by job_id) c
   where j.id = c.job_id;
  return null;
end $$;

create or replace function public.job_results_count_updated() returns trigger
language plpgsql as $$
begin
  update public.jobs j
     set completed = j.completed + c.ok, failed = j.failed + c.err,
         prompt_tokens = j.prompt_tokens + c.pt, completion_tokens = j.completion_tokens + c.ct,
         updated_at = now()
    from (select n.job_id,
                 sum((n.status = 'ok')::int - (o.status = 'ok')::int) as ok,
                 sum((n.status = 'error')::int - (o.status = 'error')::int) as err,
                 sum(coalesce(n.prompt_tokens, 0) - coalesce(o.prompt_tokens, 0)) as pt,
                 sum(coalesce(n.completion_tokens, 0) - coalesce(o.completion_tokens, 0)) as ct
            from new_rows n join old_rows o using (job_id, custom_id)
           where n.status is distinct from o.status
              or n.prompt_tokens is distinct from o.prompt_tokens
              or n.completion_tokens is distinct from o.completion_tokens
           group by n.job_id) c
   where j.id = c.job_id;
  return null;
end $$;

create or replace function public.job_results_count_deleted() returns trigger
language plpgsql as $$
begin
  update public.jobs j
     set completed = j.completed - c.ok, failed = j.failed - c.err,
         prompt_tokens = j.prompt_tokens - c.pt, completion_tokens = j.completion_tokens - c.ct,
         updated_at = now()
    from (select job_id, count(*) filter (where status = 'ok') as ok,
                 count(*) filter (where status = 'error') as err,
                 coalesce(sum(prompt_tokens), 0) as pt, coalesce(sum(completion_tokens), 0) as ct
            from old_rows group by job_id) c
   where j.id = c.job_id;
  return null;
end $$;

-- (the triggers of *_init.sql call these functions by name: replacing them is enough)

-- Jobs stored before this migration: their tokens, counted once from their results.
update public.jobs j
   set prompt_tokens = c.pt, completion_tokens = c.ct
  from (select job_id, coalesce(sum(prompt_tokens), 0) as pt, coalesce(sum(completion_tokens), 0) as ct
          from public.job_results group by job_id) c
 where j.id = c.job_id and (j.prompt_tokens, j.completion_tokens) is distinct from (c.pt, c.ct);
