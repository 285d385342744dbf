"""Owners, their job ids, and their API keys (docs/architecture.md, "Owners").

An owner is a name: a Supabase user's id (the `sub` of their access token) or the owner an API key
was made for (`llm-jobs keys create --owner NAME`). Every job, file and batch the API creates has one.
Admin keys (API_KEYS) have none: they see every owner's jobs.

Job ids are scoped by owner. The id a client chooses (its idempotency key) is stored under the
owner's prefix, `<10 hex digits of sha256(owner)>:<id>`, so two owners may both use "essays-1" and
neither ever touches the other's job. The API shows owners their own ids; admins see the stored ids
(the ones in the database, and what Supabase Realtime filters on).

    scoped_id("alice", "essays-1")         -> "2bd806c97f:essays-1"
    public_id("alice", "2bd806c97f:essays-1") -> "essays-1"

Keys are random (`ljk_` and 43 URL-safe characters, 256 bits): the store keeps their SHA-256, never
the key. A lookup hashes what a client sent and asks for that digest.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime

from pydantic import BaseModel, Field

from shared.contracts.errors import InputError, Issue
from shared.contracts.models import ID_PATTERN, OWNER_PATTERN

#: the longest id ID_PATTERN allows
MAX_ID = 128
#: the characters a scoped id adds in front of the owner's own id
PREFIX_LEN = 11
#: the longest id an owner may choose (the prefix and the id stay within ID_PATTERN)
MAX_OWNER_ID = MAX_ID - PREFIX_LEN
#: what a key starts with (so a secret scanner, or a person, can tell it apart)
KEY_PREFIX = "ljk_"

assert ID_PATTERN.endswith("{0,127}$")  # MAX_ID follows it


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def canonical_owner(owner: str) -> str:
    """A uuid in lower case, as Supabase writes a user's id (`sub`, and `auth.uid()::text` in the row-level
    security policies): a key made for `--owner 6F1C...` then sees that user's jobs. Anything else as it is."""
    return owner.lower() if _UUID.match(owner) else owner


def prefix(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:PREFIX_LEN - 1] + ":"


def scoped_id(owner: str | None, job_id: str) -> str:
    """The id a job of `owner` is stored under (an admin's job, with no owner: the id itself). An id
    over MAX_OWNER_ID characters is refused, naming the field."""
    if owner is None:
        return job_id
    if len(job_id) > MAX_OWNER_ID:
        raise InputError([Issue(f"an id is at most {MAX_OWNER_ID} characters (the owner's prefix takes "
                                f"{PREFIX_LEN} of the {MAX_ID})", field="id")])
    return prefix(owner) + job_id


def public_id(owner: str | None, stored: str) -> str:
    """The id `owner` knows a stored job by (an admin: the stored id)."""
    if owner is None:
        return stored
    return stored.removeprefix(prefix(owner))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRecord(BaseModel):
    """An owner's API key as the store keeps it (supabase/migrations/*_owners_and_keys.sql)."""

    id: str = Field(pattern=r"^key_[0-9a-f]{8,32}$")
    owner: str = Field(pattern=OWNER_PATTERN)
    #: SHA-256 of the key, hex
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: the key's first characters, to recognise it in a list
    hint: str = ""
    label: str | None = Field(default=None, max_length=200)
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_key(owner: str, label: str | None = None) -> tuple[str, KeyRecord]:
    """A fresh key (shown once) and the record the store keeps of it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, KeyRecord(id="key_" + secrets.token_hex(6), owner=owner, digest=key_digest(key),
                          hint=key[:len(KEY_PREFIX) + 4], label=label)
