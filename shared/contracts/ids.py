"""The patterns of ids and names that travel in URLs, queue keys and store keys (shared/contracts/models.py
re-exports them)."""

#: a job id: also the idempotency key, a queue key and a URL segment
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: an owner's name: a Supabase user id (a uuid), or a name such as "team-a" or "ana@school.cat"
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$"
