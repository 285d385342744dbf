"""Who is calling: a bearer token becomes a `Principal` (an owner, or an admin).

Three kinds of bearer token are accepted (README, "Signing in"):
- an admin key from API_KEYS (shared/server/api/auth.py `KeyRing`): no owner, sees every job;
- an owner's key from the store (`llm-jobs keys create --owner NAME`): kept as a SHA-256 digest,
  looked up once per KEY_CACHE_S (a revoked key stops working within that);
- a Supabase user's access token (shared/server/api/tokens.py): the owner is its `sub`.

No token: 401, when the server has credentials configured (API_KEYS, or an access-token secret or
JWKS). A server with none (local-only: `llm-jobs serve` refuses a public interface then) lets a
request without a token in as an admin; a token it is sent is still checked. An unknown or revoked
key: 403. An access token that fails its checks: 401.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from shared.contracts.errors import LLMJobsError
from shared.contracts.owners import key_digest, public_id, scoped_id
from shared.contracts.settings import Settings
from shared.server.api.auth import KeyRing
from shared.server.api.tokens import InvalidToken, TokenVerifier, looks_like_jwt
from shared.stores.base import Store

#: looked-up keys kept at most (the oldest are dropped first)
CACHE_KEYS = 10_000


@dataclass(frozen=True)
class Principal:
    #: what the rate limit and the stream cap count by (safe to log: never a key)
    who: str
    #: whose jobs it sees and makes; None: an admin (every job)
    owner: str | None

    @property
    def admin(self) -> bool:
        return self.owner is None

    def sees(self, owner: str | None) -> bool:
        """May it read and change what `owner` owns?"""
        return self.owner is None or owner == self.owner

    def stored(self, job_id: str) -> str:
        """The stored id of the job this caller calls `job_id` (shared/contracts/owners.py)."""
        return scoped_id(self.owner, job_id)

    def public(self, stored_id: str) -> str:
        """The id this caller knows a stored job by."""
        return public_id(self.owner, stored_id)


#: a server with no credentials configured, called with no token: local and trusted
LOCAL = Principal(who="anonymous", owner=None)


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class StoreKeys:
    """Owners' keys, looked up in the store and trusted for `ttl_s` seconds (misses too)."""

    def __init__(self, store: Store, ttl_s: float):
        self.store, self.ttl_s = store, ttl_s
        self._seen: OrderedDict[str, tuple[float, str | None, str]] = OrderedDict()

    async def owner(self, key: str) -> tuple[str, str] | None:
        """(owner, key id) of an active key; None for an unknown or revoked one."""
        digest = key_digest(key)
        now = time.monotonic()
        hit = self._seen.get(digest)
        if hit is None or hit[0] <= now:
            rec = await self.store.find_key(digest)
            hit = (now + self.ttl_s, rec.owner if rec and rec.active else None, rec.id if rec else "")
            if self.ttl_s > 0:
                self._seen[digest] = hit
                self._seen.move_to_end(digest)
                while len(self._seen) > CACHE_KEYS:
                    self._seen.popitem(last=False)
        return (hit[1], hit[2]) if hit[1] is not None else None


class Authenticator:
    def __init__(self, settings: Settings, store: Store):
        self.admin_keys = KeyRing.from_setting(settings.api_keys)
        self.tokens = TokenVerifier(settings)
        self.store_keys = StoreKeys(store, settings.key_cache_s)
        #: does every /v1 request need a token?
        self.required = settings.credentials_required

    async def principal(self, authorization: str | None) -> Principal:
        """The caller of a request with this Authorization header; `Refused` (401/403) otherwise."""
        if not authorization or not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
            if self.required:
                raise Refused(401, "send Authorization: Bearer <API key or Supabase access token>")
            return LOCAL
        token = authorization[7:].strip()
        if looks_like_jwt(token):
            if not self.tokens.enabled:
                raise Refused(401, "this server takes no access tokens (set SUPABASE_JWT_SECRET or "
                                   "SUPABASE_JWKS_URL); send an API key")
            try:
                sub = await self.tokens.owner(token)
            except InvalidToken as e:
                raise Refused(401, str(e)) from None
            return Principal(who="user:" + hashlib.sha256(sub.encode()).hexdigest()[:12], owner=sub)
        admin = self.admin_keys.identify(token)
        if admin is not None:
            return Principal(who=admin, owner=None)
        found = await self.store_keys.owner(token)
        if found is None:
            raise Refused(403, "this API key is not valid")
        owner, key_id = found
        return Principal(who=key_id, owner=owner)

    async def may_see_details(self, authorization: str | None) -> bool:
        """For /readyz: an admin (or a server that needs no credentials). Never raises: a bad token, or a
        store that does not answer, sees no details."""
        try:
            return (await self.principal(authorization)).admin
        except (Refused, LLMJobsError):
            return False
