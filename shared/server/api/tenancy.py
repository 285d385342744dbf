"""Owners' jobs through the API: who owns what is made, which stored job an id names, and what a
caller may see (shared/contracts/owners.py has the id scheme; credentials.py the callers).

An owner sees, lists, follows and cancels only their own jobs and files; anything else is a 404, the
same answer as for a job that does not exist (an id never tells whether somebody else has it).
"""

from __future__ import annotations

from typing import TypeVar

from shared.contracts.errors import InputError, Issue, NotFound
from shared.contracts.events import Event
from shared.contracts.files import FileRecord
from shared.contracts.models import JobOptions, JobRecord
from shared.server.api.credentials import Principal
from shared.server.lifecycle import JobLifecycle

J = TypeVar("J", bound=JobOptions)


def claim(job: J, who: Principal) -> J:
    """The job as `who` makes it: its owner set, and its id stored under the owner's prefix. An owner
    may not name another owner; an admin may (it then submits for that owner, under their prefix)."""
    if who.owner is not None and job.owner not in (None, who.owner):
        raise InputError([Issue("a job's owner is set by your credentials: leave it out", field="owner")])
    owner = who.owner if who.owner is not None else job.owner
    stored = job.id if owner is None else Principal(who.who, owner).stored(job.id)
    return job.model_copy(update={"owner": owner, "id": stored})


async def job_of(lifecycle: JobLifecycle, who: Principal, job_id: str) -> JobRecord:
    """The stored job `who` calls `job_id`; NotFound when there is none, or it is not theirs."""
    try:
        stored = who.stored(job_id)
    except InputError:  # longer than an owner's id can be: nobody has it
        raise NotFound(f"no job {job_id!r}", status=404) from None
    record = await lifecycle.store.get_job(stored)
    if record is None or not who.sees(record.owner):
        raise NotFound(f"no job {job_id!r}", status=404)
    return record


def file_of(record: FileRecord | None, who: Principal, file_id: str) -> FileRecord:
    """An uploaded file `who` may read; NotFound otherwise."""
    if record is None or not who.sees(record.owner):
        raise NotFound(f"no file {file_id!r}", status=404)
    return record


def as_seen(event: Event, who: Principal) -> Event:
    """An event with the job id `who` knows the job by."""
    if who.owner is None or event.job_id is None:
        return event
    return event.model_copy(update={"job_id": who.public(event.job_id)})
