"""Owners and credentials (issue 13): store keys, Supabase access tokens, admin keys; tenancy on every
route; ids scoped by owner; keyset listing; the SDK's `list`.

The API runs under uvicorn on loopback with the SQLite store and the local dispatcher on the fake engine.
Access tokens are real JWTs made with PyJWT: HS256 with the project's secret, and ES256 checked
against a JWKS served over HTTP on loopback (as Supabase's asymmetric keys are).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from handler.service import JobService
from shared.contracts.owners import new_key, prefix
from shared.contracts.settings import Settings
from shared.sdk import AsyncClient
from shared.server.api import create_app
from shared.server.dispatch import LocalDispatcher
from shared.stores.sqlite import SQLiteStore
from testkit.serve import ThreadedServer
from tests.fakes import FakeEngine

ADMIN = "admin-key-for-tests"
SECRET = "super-secret-jwt-key-with-at-least-64-characters-so-hs512-is-fine-too"
USER_A, USER_B = str(uuid.uuid4()), str(uuid.uuid4())


def token(sub: str | None, *, secret: str = SECRET, aud: str = "authenticated", exp_in: float = 3600,
          alg: str = "HS256", **extra) -> str:
    claims = {"aud": aud, "exp": int(time.time() + exp_in), "role": "authenticated", **extra}
    if sub is not None:
        claims["sub"] = sub
    return jwt.encode(claims, secret, algorithm=alg)


def auth(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@dataclass
class Api:
    url: str
    http: httpx.Client
    store: SQLiteStore
    settings: Settings
    alice: str
    bob: str

    def as_(self, credential: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(credential), timeout=30)


def _keys(store: SQLiteStore, *owners: str) -> list[str]:
    made = [new_key(o) for o in owners]

    async def go() -> None:
        for _, rec in made:
            await store.create_key(rec)
        await store.close()

    asyncio.run(go())
    return [k for k, _ in made]


@contextmanager
def serve(tmp_path: Path, engine: FakeEngine | None = None, **overrides) -> Iterator[Api]:
    settings = Settings(_env_file=None, **{"api_keys": ADMIN, "supabase_jwt_secret": SECRET, "rate_limit_per_minute": 0,
                                           "key_cache_s": 0, **overrides})
    alice, bob = _keys(SQLiteStore(tmp_path / "jobs.db"), "alice", "bob")
    store = SQLiteStore(tmp_path / "jobs.db")
    dispatcher = LocalDispatcher(settings, store, JobService(engine or FakeEngine(), settings, store=store))
    server = ThreadedServer(create_app(settings, store=store, dispatcher=dispatcher)).start()
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        yield Api(server.url, http, store, settings, alice, bob)
    finally:
        http.close()
        server.stop()


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    with serve(tmp_path) as api:
        yield api


def job(job_id: str | None = None, n: int = 3, **extra) -> dict:
    body = {"items": [{"custom_id": f"c{i}", "prompt": f"hello {i}"} for i in range(n)], **extra}
    return body if job_id is None else {"id": job_id, **body}


def submit(client: httpx.Client, body: dict) -> httpx.Response:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code in (200, 202), r.text
    return r


def wait_ended(client: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
        if view["status"] in ("completed", "failed", "cancelled"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


# ## Credentials


def test_a_store_key_acts_for_its_owner_and_the_job_records_the_owner(api):
    with api.as_(api.alice) as alice:
        accepted = submit(alice, job("essays-1")).json()
        assert accepted["id"] == "essays-1"
        assert accepted["store_id"] == prefix("alice") + "essays-1"
        view = wait_ended(alice, "essays-1")
    assert view["owner"] == "alice" and view["status"] == "completed"
    # the store has the owner on the row: what RLS and Realtime filter on
    record = on_store(api, lambda store: store.get_job(prefix("alice") + "essays-1"))
    assert record.owner == "alice"


def on_store(api: Api, call):
    """One call on a store of its own over the API's SQLite file."""
    async def go():
        store = SQLiteStore(api.store.path)
        try:
            return await call(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_a_supabase_access_token_acts_for_its_user(api):
    with api.as_(token(USER_A)) as user:
        submit(user, job("mine"))
        view = wait_ended(user, "mine")
    assert view["owner"] == USER_A
    assert view["store_id"] == prefix(USER_A) + "mine"


def test_a_key_made_for_a_user_id_sees_that_users_jobs(api, tmp_path):
    (server_key,) = _keys(SQLiteStore(api.store.path), USER_A)
    with api.as_(token(USER_A)) as user, api.as_(server_key) as server:
        submit(user, job("shared-view"))
        assert server.get("/v1/jobs/shared-view").json()["owner"] == USER_A


@pytest.mark.parametrize("bad", [
    pytest.param(lambda: token(USER_A, exp_in=-120), id="expired"),
    pytest.param(lambda: token(USER_A, secret="another-secret-of-at-least-thirty-two-chars"), id="wrong-secret"),
    pytest.param(lambda: token(USER_A)[:-4] + ("AAAA" if not token(USER_A).endswith("AAAA") else "BBBB"),
                 id="tampered-signature"),
    pytest.param(lambda: _tampered_payload(), id="tampered-payload"),
    pytest.param(lambda: token(USER_A, aud="anon"), id="wrong-audience"),
    pytest.param(lambda: token(None), id="no-sub"),
    pytest.param(lambda: jwt.encode({"sub": USER_A, "aud": "authenticated", "exp": int(time.time()) + 60}, None,
                                    algorithm="none"), id="alg-none"),
    pytest.param(lambda: token(USER_A, alg="HS512"), id="other-alg"),
    pytest.param(lambda: "eyJhbGciOiJIUzI1NiJ9.not-json.sig", id="garbage"),
])
def test_bad_access_tokens_are_refused_with_401(api, bad):
    r = api.http.get("/v1/jobs", headers=auth(bad()))
    assert r.status_code == 401, r.text
    assert "invalid_token" in r.headers["www-authenticate"]
    assert SECRET not in r.text


def _tampered_payload() -> str:
    head, _, sig = token(USER_A).split(".")
    import base64

    forged = base64.urlsafe_b64encode(json.dumps({"sub": USER_B, "aud": "authenticated", "role": "authenticated",
                                                  "exp": int(time.time()) + 3600}).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_no_credential_is_401_and_an_unknown_or_revoked_key_is_403(api):
    assert api.http.get("/v1/jobs").status_code == 401
    assert api.http.get("/v1/jobs", headers=auth("ljk_not-a-key")).status_code == 403
    (alice_key,) = on_store(api, lambda store: store.list_keys(owner="alice"))
    assert api.http.get("/v1/jobs", headers=auth(api.alice)).status_code == 200
    assert on_store(api, lambda store: store.revoke_key(alice_key.id))
    assert api.http.get("/v1/jobs", headers=auth(api.alice)).status_code == 403  # KEY_CACHE_S=0: at once
    assert on_store(api, lambda store: store.revoke_key(alice_key.id))  # again: still revoked, still True
    assert not on_store(api, lambda store: store.revoke_key("key_00000000"))


# ## Tenancy


def test_an_owner_sees_lists_follows_and_cancels_only_their_own_jobs(api):
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob, api.as_(token(USER_A)) as user:
        submit(alice, job("a-job"))
        wait_ended(alice, "a-job")
        for client in (bob, user):
            assert client.get("/v1/jobs/a-job").status_code == 404
            assert client.get("/v1/jobs/a-job/results").status_code == 404
            assert client.get("/v1/jobs/a-job/events").status_code == 404
            assert client.post("/v1/jobs/a-job/cancel").status_code == 404
            assert [j["id"] for j in client.get("/v1/jobs").json()["data"]] == []
            # the stored id does not reach it either
            assert client.get(f"/v1/jobs/{prefix('alice')}a-job").status_code == 404
        assert [j["id"] for j in alice.get("/v1/jobs").json()["data"]] == ["a-job"]
        assert len(alice.get("/v1/jobs/a-job/results").json()["data"]) == 3


def test_the_admin_key_sees_every_owners_jobs_by_their_stored_ids(api):
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob, api.as_(ADMIN) as admin:
        submit(alice, job("same-id"))
        submit(bob, job("same-id"))
        wait_ended(alice, "same-id")
        wait_ended(bob, "same-id")
        listed = {j["id"]: j["owner"] for j in admin.get("/v1/jobs").json()["data"]}
        assert listed == {prefix("alice") + "same-id": "alice", prefix("bob") + "same-id": "bob"}
        assert admin.get(f"/v1/jobs/{prefix('bob')}same-id").json()["owner"] == "bob"


def test_a_resubmit_of_another_owners_id_never_touches_their_job(api):
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob:
        submit(alice, job("contested", n=2, metadata={"who": "alice"}))
        wait_ended(alice, "contested")
        assert alice.post("/v1/jobs/contested/cancel").status_code == 200
        r = bob.post("/v1/jobs", json=job("contested", n=5, metadata={"who": "bob"}))
        assert r.status_code == 202 and r.json()["created"] is True  # bob's own, new job
        wait_ended(bob, "contested")
        mine = alice.get("/v1/jobs/contested").json()
        theirs = bob.get("/v1/jobs/contested").json()
    assert mine["metadata"] == {"who": "alice"} and mine["total"] == 2
    assert theirs["metadata"] == {"who": "bob"} and theirs["total"] == 5
    with api.as_(api.alice) as alice:
        ids = [r["custom_id"] for r in alice.get("/v1/jobs/contested/results").json()["data"]]
    assert ids == ["c0", "c1"]


def test_an_owner_may_not_name_another_owner(api):
    with api.as_(api.alice) as alice:
        r = alice.post("/v1/jobs", json=job("x", owner="bob"))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "owner"


def test_an_admin_may_submit_for_an_owner(api):
    with api.as_(ADMIN) as admin, api.as_(api.bob) as bob:
        accepted = submit(admin, job("for-bob", owner="bob")).json()
        assert accepted["id"] == prefix("bob") + "for-bob"
        assert bob.get("/v1/jobs/for-bob").json()["owner"] == "bob"


def test_an_owners_id_over_its_length_is_refused_naming_the_field(api):
    with api.as_(api.alice) as alice:
        r = alice.post("/v1/jobs", json=job("x" * 118))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "id"


def test_events_carry_the_id_the_owner_knows(api):
    with api.as_(api.alice) as alice:
        submit(alice, job("followed"))
        with alice.stream("GET", "/v1/jobs/followed/events") as r:
            datas = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert datas and {d["job_id"] for d in datas} == {"followed"}
    assert datas[-1]["type"] == "final"


def test_files_and_batches_belong_to_their_owner(api):
    line = json.dumps({"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}})
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob:
        up = alice.post("/v1/files", files={"file": ("in.jsonl", io.BytesIO((line + "\n").encode()))},
                        data={"purpose": "batch"})
        assert up.status_code == 200, up.text
        file_id = up.json()["id"]
        assert bob.get(f"/v1/files/{file_id}").status_code == 404
        assert bob.get(f"/v1/files/{file_id}/content").status_code == 404
        # bob can make neither a job nor a batch of alice's file
        assert bob.post("/v1/jobs", json={"input_file_id": file_id}).status_code == 404
        assert bob.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"}).status_code == 404
        batch = alice.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                "completion_window": "24h"}).json()
        assert batch["id"].startswith("batch_")
        assert bob.get(f"/v1/batches/{batch['id']}").status_code == 404
        assert bob.get("/v1/batches").json()["data"] == []
        assert [b["id"] for b in alice.get("/v1/batches").json()["data"]] == [batch["id"]]
        view = wait_ended(alice, batch["id"])
        assert view["status"] == "completed" and view["completed"] == 1, view
        out = alice.get(f"/v1/files/file-out-{batch['id']}/content")
        assert out.status_code == 200 and json.loads(out.text.splitlines()[0])["custom_id"] == "q1"
        assert bob.get(f"/v1/files/file-out-{batch['id']}/content").status_code == 404


# ## Listing


def test_listing_is_keyset_paginated_newest_first_and_filtered_by_status(api):
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob:
        for i in range(7):
            submit(alice, job(f"j{i}", n=1))
        submit(bob, job("bobs", n=1))
        for i in range(7):
            wait_ended(alice, f"j{i}")
        seen, after = [], None
        while True:
            page = alice.get("/v1/jobs", params={"limit": 3, **({"after": after} if after else {})}).json()
            seen += [j["id"] for j in page["data"]]
            after = page["next_after"]
            if after is None:
                break
        assert seen == [f"j{i}" for i in reversed(range(7))]
        assert [j["id"] for j in alice.get("/v1/jobs", params={"status": "queued"}).json()["data"]] == []
        assert len(alice.get("/v1/jobs", params={"status": "completed"}).json()["data"]) == 7
        # another owner's job as a cursor gives nothing (it is not in this owner's list)
        assert alice.get("/v1/jobs", params={"after": "bobs"}).json()["data"] == []


def test_the_sdk_lists_the_callers_jobs(api):
    with api.as_(api.alice) as alice:
        for i in range(3):
            submit(alice, job(f"s{i}", n=1))

    async def go():
        async with AsyncClient("http", base_url=api.url, api_key=api.alice) as client:
            first = await client.list(limit=2)
            rest = await client.list(limit=2, after=first["next_after"])
            return first, rest

    first, rest = asyncio.run(go())
    assert [j["id"] for j in first["data"]] == ["s2", "s1"]
    assert [j["id"] for j in rest["data"]] == ["s0"] and rest["next_after"] is None


# ## JWKS (Supabase's asymmetric signing keys)


def _hs256_by_hand(claims: dict, secret: bytes) -> str:
    """An HS256 token keyed with any bytes (PyJWT refuses to sign with a public key's text: an attacker would not)."""
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(hmac.new(secret, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


@contextmanager
def jwks_server(public_jwk: dict) -> Iterator[str]:
    body = json.dumps({"keys": [public_jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
    finally:
        server.shutdown()


def test_es256_tokens_are_checked_against_the_jwks(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    other = ec.generate_private_key(ec.SECP256R1())
    claims = {"sub": USER_B, "aud": "authenticated", "exp": int(time.time()) + 600}
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "k1"})
    # an HS256 token "signed" with the public key's text: never accepted where only the JWKS checks tokens
    confused = _hs256_by_hand(claims, json.dumps(jwk).encode())
    with jwks_server(jwk) as url, serve(tmp_path, supabase_jwks_url=url, supabase_jwt_secret=None) as api:
        with api.as_(good) as user:
            submit(user, job("es"))
            assert user.get("/v1/jobs/es").json()["owner"] == USER_B
        assert api.http.get("/v1/jobs", headers=auth(forged)).status_code == 401
        assert api.http.get("/v1/jobs", headers=auth(confused)).status_code == 401
