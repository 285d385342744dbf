-- Where a dispatcher keeps the platform's request id for a job's current run (issue 11, finding 9):
-- RunPod's /run id, so that any API replica, or one started later, can cancel the run. Written
-- by the dispatcher after the platform took the job; NULL while no request is known.

alter table public.jobs add column if not exists dispatch_ref text;

comment on column public.jobs.dispatch_ref is
  'the platform''s request id for this job''s current run (RunPod /run id); null when none is known';
