-- The files policies for signed-in users only (issue 13).
--
-- files_owner_read and file_items_owner_read (20261124000200_files.sql) named no role, so they
-- applied to every role, anon included: a request as anon whose claims carried an owner's `sub`
-- read that owner's files and lines. They are made again `to authenticated`, as the jobs policies
-- were in 20261125000000_owners_and_keys.sql; anon then reads nothing. Found by
-- tests/store/test_rls.py. Guarded, so the file also applies to plain PostgreSQL 15+.

do $$ begin
  if exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'auth' and p.proname = 'uid') then
    execute 'drop policy if exists files_owner_read on public.files';
    execute 'create policy files_owner_read on public.files for select to authenticated
               using (owner = (select auth.uid())::text)';
    execute 'drop policy if exists file_items_owner_read on public.file_items';
    execute 'create policy file_items_owner_read on public.file_items for select to authenticated using (
               exists (select 1 from public.files f where f.id = file_id and f.owner = (select auth.uid())::text))';
  end if;
end $$;
