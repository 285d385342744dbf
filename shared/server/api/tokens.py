"""Supabase users' access tokens: the JWT supabase-js holds in the browser, sent as a bearer token.

A token is accepted when its signature checks out (HS256 with SUPABASE_JWT_SECRET, or RS256/ES256
with a key from SUPABASE_JWKS_URL, Supabase's asymmetric signing keys), it has not expired, its
`aud` is JWT_AUDIENCE ("authenticated": a signed-in user; the anon and service-role keys carry none),
its `iss` is JWT_ISSUER when that is set, and it names a user (`sub`). The user's id is the owner.

The algorithm a token names must match the kind of key that checks it: HS256 only with the secret,
asymmetric ones only with the JWKS (no `alg: none`, and no HS256 token "signed" with a public key).
Anything else is `InvalidToken`, which the API answers 401. A JWKS that cannot be fetched is
`TokenKeysUnavailable` (503: the token may be fine).
"""

from __future__ import annotations

import asyncio
import re

import jwt

from shared.contracts.errors import LLMJobsError
from shared.contracts.models import OWNER_PATTERN
from shared.contracts.settings import Settings

#: what the JWKS may sign with (Supabase: ES256 by default, RS256 also offered)
ASYMMETRIC = ("RS256", "ES256")
#: seconds of clock skew allowed on exp, nbf and iat
LEEWAY_S = 30


class InvalidToken(Exception):
    """A bearer token that is not a valid access token; the message says why (it never holds the token)."""


class TokenKeysUnavailable(LLMJobsError):
    """The JWKS could not be fetched: a token can be neither accepted nor refused."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class TokenVerifier:
    def __init__(self, settings: Settings):
        secret = settings.supabase_jwt_secret
        self._secret = secret.get_secret_value() if secret else None
        self._jwks = (jwt.PyJWKClient(settings.supabase_jwks_url, cache_keys=True, lifespan=300,
                                      timeout=settings.http_timeout_s) if settings.supabase_jwks_url else None)
        self._timeout_s = settings.http_timeout_s
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer

    @property
    def enabled(self) -> bool:
        return self._secret is not None or self._jwks is not None

    async def owner(self, token: str) -> str:
        """The user id (`sub`) of a valid token; InvalidToken otherwise."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as e:
            raise InvalidToken("the access token is malformed") from e
        if alg == "HS256" and self._secret is not None:
            key: object = self._secret
        elif alg in ASYMMETRIC and self._jwks is not None:
            key = await self._signing_key(token)
        else:
            raise InvalidToken(f"access tokens signed with {str(alg)[:16]!r} are not accepted here")
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                leeway=LEEWAY_S, options={"require": ["exp", "sub", "aud"]})
        except jwt.ExpiredSignatureError as e:
            raise InvalidToken("the access token has expired: sign in again") from e
        except jwt.InvalidAudienceError as e:
            raise InvalidToken(f"the access token is not for audience {self.audience!r}") from e
        except jwt.PyJWTError as e:
            raise InvalidToken(f"the access token is not valid ({type(e).__name__})") from e
        sub = claims.get("sub")
        if not isinstance(sub, str) or not re.match(OWNER_PATTERN, sub):
            raise InvalidToken("the access token names no user (sub)")
        return sub

    async def _signing_key(self, token: str) -> object:
        assert self._jwks is not None
        try:
            async with asyncio.timeout(self._timeout_s + 1):
                found = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as e:
            raise TokenKeysUnavailable(f"JWKS: {e}") from e
        except TimeoutError as e:
            raise TokenKeysUnavailable(f"JWKS: no answer in {self._timeout_s:g} s") from e
        except jwt.PyJWTError as e:  # no key with the token's kid, a JWKS that is not one
            raise InvalidToken(f"the access token's signing key is unknown ({type(e).__name__})") from e
        return found.key
