-- Named tasks and measured estimates (issue 15).
--
-- jobs.task: the named task a job was made from (tasks/*.yaml), if any. A submit's `estimated_time_s`
-- comes from the throughput of the last completed jobs of the same model and task
-- (shared/server/estimates.py), read newest first: this index serves that read, over completed jobs only.
alter table public.jobs add column if not exists task text check (task is null or length(task) <= 128);

create index if not exists jobs_model_task_finished_idx on public.jobs (model, task, finished_at desc)
  where status = 'completed';
