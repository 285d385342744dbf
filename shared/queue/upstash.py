"""A reliable job queue on Upstash Redis, over REST (no blocking commands).

An entry is one shard of a job (shared/contracts/shards.py): its id is the job id for a job of
one shard, `<job id>#<shard>` otherwise, and its document is the shard's reference (the job's
options and an idx range), never the items, which are in the store. A whole `Job` document may be
queued too (an inline job: it is measured against the request limit).

Keys, under `QUEUE_PREFIX`:
    q:high, q:default   lists of entry ids (LPUSH in, RPOP out: FIFO; high drains first)
    job:<entry>         the entry's document (TTL JOB_TTL_S; its existence makes enqueue idempotent)
    meta:<entry>        hash: priority, attempts, state, worker, token (the lease's), last_error
    processing          zset: entry -> lease deadline (ms, Redis server time)
    delayed             zset: entry -> when a retry may run (ms)
    dead                list of entries that used up MAX_ATTEMPTS (meta keeps the last error)
    lease_expiries      a counter: leases that expired and were reaped (`reap`), since the queue began
    shards:<job id>     how many shards the job has (cancel reaches every one)
    cancel:<job id>     a flag a running worker checks at every chunk (all of the job's shards)
    events:<id>         a capped stream of the job's events (EVENTS_MAXLEN), TTL refreshed at each write
    trim:<id>           the last event id trimmed from that stream: a reader behind it gets a `gap`

Every state change is one Lua script, so it is atomic, and uses Redis' clock, so workers'
clocks do not matter. Each reservation gets its own lease token: extend, ack and nack check it, so
a lease that expired and was reserved again (even by the same worker) is dead to its old holder.
Every call is bounded by QUEUE_TIMEOUT_S.

Upstash refuses a command over `MAX_REQUEST_BYTES` (10 MB; "ERR max request size exceeded") and a
record over `MAX_RECORD_BYTES` (100 MB). A job travels whole in one command (the enqueue script
carries its document), so `enqueue` and `resubmit` measure that command before sending it and raise
`PayloadTooLarge` when it is over: a job is never half-sent, and the message says what to do. `check`
does the same measurement alone, for the dispatcher to refuse a job before it is recorded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from upstash_redis.asyncio import Redis
from upstash_redis.errors import UpstashError

from shared.contracts.errors import PayloadTooLarge, QueueError, QueueUnavailable
from shared.contracts.events import Event, GapEvent, parse_event
from shared.contracts.models import Job
from shared.contracts.settings import DEFAULTS, Settings
from shared.contracts.shards import ShardRef, is_shard_ref

#: the lanes entries wait in: "high" drains first; "train" holds training jobs, which only workers that train
#: take (handler/training/run.py)
Priority = Literal["high", "default", "train"]
PRIORITIES: tuple[Priority, ...] = ("high", "default", "train")

#: Upstash's limit on one command, "Free" and "Pay as you go" plans (bigger plans allow more: pass
#: `max_request_bytes`); https://upstash.com/docs/redis/troubleshooting/max_request_size_exceeded
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: Upstash's limit on one record; https://upstash.com/docs/redis/troubleshooting/max_record_size_exceeded
MAX_RECORD_BYTES = 100 * 1024 * 1024
#: how a refusal names the transport
TRANSPORT = "the Upstash queue (DISPATCHER=queue)"


def request_bytes(cmd: list[Any]) -> int:
    """The size of one command as upstash-redis sends it: a JSON array, compact and UTF-8 (httpx's encoding)."""
    return len(json.dumps(cmd, ensure_ascii=False, separators=(",", ":")).encode())

_NOW = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: job, meta, queue, cancel, shards   ARGV: doc, ttl, entry id, priority, shards
_ENQUEUE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], 'priority', ARGV[4], 'attempts', 0, 'state', 'queued')
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[2])
  redis.call('LPUSH', KEYS[3], ARGV[3])
  return 1
end
return 0
"""

# A job the queue knows but no longer holds (cancelled, dead-lettered, done): queue it again with a
# fresh attempt count, its cancel flag and its old events gone. One still queued, running or
# waiting out a retry is left alone.
# KEYS: job, meta, queue, cancel, shards, dead, events, trim   ARGV: doc, ttl, entry id, priority, shards
_RESUBMIT = """
local state = redis.call('HGET', KEYS[2], 'state')
if redis.call('EXISTS', KEYS[1]) == 1 and (state == 'queued' or state == 'running' or state == 'retrying') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[2])
redis.call('DEL', KEYS[4], KEYS[7], KEYS[8])
redis.call('LREM', KEYS[6], 0, ARGV[3])
redis.call('HSET', KEYS[2], 'priority', ARGV[4], 'attempts', 0, 'state', 'queued', 'last_error', '', 'worker', '')
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[3])
return 1
"""

# KEYS: processing, delayed, q:high, q:default   ARGV: prefix, worker, lease_ms, token
_RESERVE = _NOW + """
local p = ARGV[1]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('RPUSH', p .. 'q:' .. (redis.call('HGET', p .. 'meta:' .. id, 'priority') or 'default'), id)
end
for i = 3, #KEYS do
  local id = redis.call('RPOP', KEYS[i])
  while id do
    local jid = string.match(id, '^(.*)#%d+$') or id
    if redis.call('EXISTS', p .. 'cancel:' .. jid) == 0 and redis.call('EXISTS', p .. 'job:' .. id) == 1 then
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
      local attempts = redis.call('HINCRBY', p .. 'meta:' .. id, 'attempts', 1)
      redis.call('HSET', p .. 'meta:' .. id, 'worker', ARGV[2], 'token', ARGV[4], 'state', 'running')
      return {id, redis.call('GET', p .. 'job:' .. id), attempts}
    end
    id = redis.call('RPOP', KEYS[i])
  end
end
return false
"""

# KEYS: processing, meta   ARGV: id, token, lease_ms
_EXTEND = _NOW + """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

# KEYS: processing, meta   ARGV: id, token
_ACK = """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] or redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'state', 'done', 'token', '')
return 1
"""

# KEYS: processing, meta, delayed, dead
# ARGV: id, token, error, max_attempts, base_ms, max_ms, release, prefix, dead_now
# returns 0: not ours; 1: will retry (or released); 2: dead-lettered
_NACK = _NOW + """
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] or redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'token', '')
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[2], 'attempts', -1)
  redis.call('HSET', KEYS[2], 'state', 'queued')
  redis.call('RPUSH', ARGV[8] .. 'q:' .. (redis.call('HGET', KEYS[2], 'priority') or 'default'), ARGV[1])
  return 1
end
local attempts = tonumber(redis.call('HGET', KEYS[2], 'attempts') or '0')
redis.call('HSET', KEYS[2], 'last_error', ARGV[3])
if attempts >= tonumber(ARGV[4]) or ARGV[9] == '1' then
  redis.call('HSET', KEYS[2], 'state', 'dead')
  redis.call('LPUSH', KEYS[4], ARGV[1])
  return 2
end
local backoff = math.min(tonumber(ARGV[6]), tonumber(ARGV[5]) * 2 ^ (attempts - 1))
redis.call('HSET', KEYS[2], 'state', 'retrying')
redis.call('ZADD', KEYS[3], now + backoff, ARGV[1])
return 1
"""

# KEYS: processing, dead, lease_expiries   ARGV: prefix, max_attempts   returns {requeued, dead}
_REAP = _NOW + """
local requeued, dead = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', KEYS[1], id)
  local meta = ARGV[1] .. 'meta:' .. id
  local attempts = tonumber(redis.call('HGET', meta, 'attempts') or '0')
  if attempts >= tonumber(ARGV[2]) then
    redis.call('HSET', meta, 'state', 'dead', 'token', '', 'last_error', 'lease expired on attempt ' .. attempts)
    redis.call('LPUSH', KEYS[2], id)
    dead = dead + 1
  else
    redis.call('HSET', meta, 'state', 'queued', 'worker', '', 'token', '')
    redis.call('RPUSH', ARGV[1] .. 'q:' .. (redis.call('HGET', meta, 'priority') or 'default'), id)
    requeued = requeued + 1
  end
end
if requeued + dead > 0 then redis.call('INCRBY', KEYS[3], requeued + dead) end
return {requeued, dead}
"""

# Every shard of the job: a waiting one is removed (it never runs), a running one stops at its next
# chunk (the flag). Returns {removed, running}.
# KEYS: cancel, shards, q:high, q:default, delayed, processing   ARGV: job id, ttl, prefix
_CANCEL = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
local n = tonumber(redis.call('GET', KEYS[2]) or '1')
local removed, running = 0, 0
for k = 0, n - 1 do
  local id = ARGV[1]
  if n > 1 then id = ARGV[1] .. '#' .. k end
  removed = removed + redis.call('LREM', KEYS[3], 0, id) + redis.call('LREM', KEYS[4], 0, id)
    + redis.call('ZREM', KEYS[5], id)
  if redis.call('ZSCORE', KEYS[6], id) then running = running + 1 end
  local meta = ARGV[3] .. 'meta:' .. id
  if redis.call('EXISTS', meta) == 1 and redis.call('HGET', meta, 'state') ~= 'done' then
    redis.call('HSET', meta, 'state', 'cancelled')
  end
end
return {removed, running}
"""

# KEYS: dead, meta, queue   ARGV: id
_REQUEUE = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'attempts', 0, 'state', 'queued', 'last_error', '')
redis.call('RPUSH', KEYS[3], ARGV[1])
return 1
"""

# Append an event, trim the stream to exactly `maxlen` (recording the last id trimmed away, so a
# reader behind it is told of the gap), and refresh the expiry at every write: a stream whose job
# dies mid-way still goes.
# KEYS: events, trim   ARGV: data, maxlen, ttl
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if over > 0 then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[2])
  redis.call('SET', KEYS[2], gone[#gone][1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return id
"""

# The trim point and the events after `start`, read together so that no trim falls between them.
# KEYS: events, trim   ARGV: start, count
_EVENTS = """
return {redis.call('GET', KEYS[2]) or '', redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])}
"""

# KEYS: the lanes (high, default, train), processing, delayed, dead, lease_expiries
_STATS = """
return {redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2]), redis.call('LLEN', KEYS[3]),
        redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('LLEN', KEYS[6]),
        tonumber(redis.call('GET', KEYS[7]) or '0')}
"""
_LIST = """
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('LRANGE', KEYS[2], 0, -1),
        redis.call('LRANGE', KEYS[3], 0, -1), redis.call('ZRANGE', KEYS[4], 0, -1),
        redis.call('ZRANGE', KEYS[5], 0, -1)}
"""


#: what a queue entry carries: one shard of a staged job, or a whole inline job
Work = ShardRef | Job


def parse_work(doc: str | bytes) -> Work:
    """An entry's document read back: a shard reference (`"kind": "shard"`) or a whole Job."""
    data = json.loads(doc)
    return ShardRef.model_validate(data) if is_shard_ref(data) else Job.model_validate(data)


@dataclass(frozen=True, slots=True)
class Lease:
    #: the shard (or whole job) to run
    job: Work
    worker_id: str
    attempt: int
    #: this reservation's own token: extend, ack and nack hold only with it
    token: str

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def entry_id(self) -> str:
        return self.job.entry_id


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    #: the stream's id: pass it as `after` to resume
    id: str
    event: Event


class JobQueue:
    def __init__(self, redis: Redis, *, prefix: str = DEFAULTS.queue_prefix,
                 timeout_s: float = DEFAULTS.queue_timeout_s, job_ttl_s: int = DEFAULTS.job_ttl_s,
                 max_attempts: int = DEFAULTS.max_attempts,
                 retry_backoff_s: float = DEFAULTS.retry_backoff_s,
                 retry_backoff_max_s: float = DEFAULTS.retry_backoff_max_s, events_maxlen: int = DEFAULTS.events_maxlen,
                 events_ttl_s: int = DEFAULTS.events_ttl_s, max_request_bytes: int = MAX_REQUEST_BYTES):
        self._redis = redis
        self.max_request_bytes = max_request_bytes
        self.p = prefix.rstrip(":") + ":"
        self.timeout_s = timeout_s
        self.job_ttl_s = job_ttl_s
        self.max_attempts = max_attempts
        self.retry_backoff_ms = int(retry_backoff_s * 1000)
        self.retry_backoff_max_ms = int(retry_backoff_max_s * 1000)
        self.events_maxlen = events_maxlen
        self.events_ttl_s = events_ttl_s

    @classmethod
    def connect(cls, url: str, token: str, **kw: Any) -> JobQueue:
        """A queue over Upstash's REST API. A trailing slash on the URL would break /pipeline: strip it."""
        redis = Redis(url=url.rstrip("/"), token=token, rest_retries=0, allow_telemetry=False)
        return cls(redis, **kw)

    @classmethod
    def from_settings(cls, s: Settings) -> JobQueue:
        if not (s.upstash_redis_rest_url and s.upstash_redis_rest_token):
            raise QueueError("the queue needs UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN")
        return cls.connect(s.upstash_redis_rest_url, s.upstash_redis_rest_token.get_secret_value(),
                           prefix=s.queue_prefix, timeout_s=s.queue_timeout_s, job_ttl_s=s.job_ttl_s,
                           max_attempts=s.max_attempts, retry_backoff_s=s.retry_backoff_s,
                           retry_backoff_max_s=s.retry_backoff_max_s, events_maxlen=s.events_maxlen,
                           events_ttl_s=s.events_ttl_s)

    async def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await fn(*args, **kw)
        except TimeoutError as e:
            raise QueueUnavailable(f"queue {what}: no answer in {self.timeout_s:g} s") from e
        except UpstashError as e:
            if "WRONGPASS" in str(e) or "nauthorized" in str(e):
                raise QueueError(f"queue {what}: unauthorized: check UPSTASH_REDIS_REST_TOKEN") from e
            raise QueueError(f"queue {what}: {e}") from e
        except Exception as e:  # httpx transport errors, an answer that is not JSON
            raise QueueUnavailable(f"queue {what}: {type(e).__name__}: {e}") from e

    def _eval(self, what: str, script: str, keys: list[str], args: list[Any]) -> Any:
        return self._call(what, self._redis.eval, script, keys, [str(a) for a in args])

    def _k(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    # ## Producing

    def _enqueue_keys(self, work: Work, priority: Priority) -> list[str]:
        return [self._k("job", work.entry_id), self._k("meta", work.entry_id), self._k("q", priority),
                self._k("cancel", work.job_id), self._k("shards", work.job_id)]

    def _resubmit_keys(self, work: Work, priority: Priority) -> list[str]:
        return [*self._enqueue_keys(work, priority), self._k("dead"), self._k("events", work.job_id),
                self._k("trim", work.job_id)]

    def _args(self, work: Work, doc: str, priority: Priority) -> list[Any]:
        return [doc, self.job_ttl_s, work.entry_id, priority, work.shards if isinstance(work, ShardRef) else 1]

    def _document(self, work: Work, script: str, keys: list[str], priority: Priority) -> str:
        """The entry's document, once the command carrying it is known to fit Upstash's request limit
        (PayloadTooLarge otherwise). The document is measured once, as the JSON string it travels as."""
        doc = json.dumps(work.wire())
        doc_bytes = len(json.dumps(doc, ensure_ascii=False).encode()) - 2  # as an element of the command
        size = request_bytes(["EVAL", script, len(keys), *keys, *map(str, self._args(work, "", priority))]) + doc_bytes
        if size > self.max_request_bytes:
            raise PayloadTooLarge(transport=TRANSPORT, size=size, limit=self.max_request_bytes,
                                  reference=isinstance(work, ShardRef))
        return doc

    def check(self, work: Work, priority: Priority = "default") -> None:
        """Raise PayloadTooLarge when the entry is too big to queue (nothing is sent). CPU work on the whole
        document: call it in a thread for a big inline job."""
        self._document(work, _RESUBMIT, self._resubmit_keys(work, priority), priority)  # the bigger command

    async def enqueue(self, work: Work, priority: Priority = "default") -> bool:
        """Queue a shard (or a whole inline job); False if an entry with this id is already known (enqueue
        is idempotent). Raises PayloadTooLarge, before sending anything, when it is over Upstash's request
        limit."""
        keys = self._enqueue_keys(work, priority)
        doc = await asyncio.to_thread(self._document, work, _ENQUEUE, keys, priority)  # a big job: off the loop
        return bool(await self._eval("enqueue", _ENQUEUE, keys, self._args(work, doc, priority)))

    async def resubmit(self, work: Work, priority: Priority = "default") -> bool:
        """Queue an entry the queue knows but no longer holds (cancelled, dead-lettered, done) again, with
        fresh attempts; False when it is still queued, running or waiting out a retry. PayloadTooLarge as
        `enqueue`."""
        keys = self._resubmit_keys(work, priority)
        doc = await asyncio.to_thread(self._document, work, _RESUBMIT, keys, priority)
        return bool(await self._eval("resubmit", _RESUBMIT, keys, self._args(work, doc, priority)))

    async def cancel(self, job_id: str) -> bool:
        """Cancel every shard of a job: a waiting one never runs; a running one stops at its next chunk.
        True when some were waiting and none of them runs any more (nobody else records the outcome)."""
        removed, running = await self._eval(
            "cancel", _CANCEL, [self._k("cancel", job_id), self._k("shards", job_id), self._k("q", "high"),
                                self._k("q", "default"), self._k("delayed"), self._k("processing")],
            [job_id, self.job_ttl_s, self.p])
        return int(removed) > 0 and int(running) == 0

    # ## Consuming

    async def reserve(self, worker_id: str, lease_s: float, *,
                      lanes: Sequence[Priority] = ("high", "default")) -> Lease | None:
        """Take the next entry from `lanes`, in their order (high, then default; the train lane only for
        workers that train) with a lease of its own; None when nothing is ready. Never blocks.

        The document is parsed in a thread: a big inline job must not stall the event loop, where
        the heartbeats of the jobs already running are.
        """
        token = secrets.token_hex(12)
        got = await self._eval("reserve", _RESERVE, [self._k("processing"), self._k("delayed"),
                               *(self._k("q", lane) for lane in lanes)],
                               [self.p, worker_id, int(lease_s * 1000), token])
        if not got:
            return None
        _, doc, attempt = got
        return Lease(await asyncio.to_thread(parse_work, doc), worker_id, int(attempt), token)

    async def extend(self, lease: Lease, lease_s: float) -> bool:
        """Heartbeat. False if the lease was lost (expired and reaped): stop working on the job."""
        ok = await self._eval("extend", _EXTEND, [self._k("processing"), self._k("meta", lease.entry_id)],
                              [lease.entry_id, lease.token, int(lease_s * 1000)])
        return bool(ok)

    async def ack(self, lease: Lease) -> bool:
        return bool(await self._eval("ack", _ACK, [self._k("processing"), self._k("meta", lease.entry_id)],
                                     [lease.entry_id, lease.token]))

    async def nack(self, lease: Lease, error: str, *, release: bool = False,
                   dead_letter: bool = False) -> Literal["retry", "dead", "lost"]:
        """Give the job back: retried with backoff, or dead-lettered after MAX_ATTEMPTS.

        `release=True` hands it straight back without using up an attempt (a worker shutting down);
        `dead_letter=True` dead-letters it now (a job that can never run).
        """
        code = await self._eval("nack", _NACK, [self._k("processing"), self._k("meta", lease.entry_id),
                                self._k("delayed"), self._k("dead")],
                                [lease.entry_id, lease.token, error[:2000], self.max_attempts,
                                 self.retry_backoff_ms, self.retry_backoff_max_ms, int(release), self.p,
                                 int(dead_letter)])
        return {0: "lost", 1: "retry", 2: "dead"}[int(code)]

    async def reap(self) -> tuple[int, int]:
        """Requeue jobs whose lease expired (their worker died); (requeued, dead-lettered). Each one counts in
        `lease_expiries` (`stats()`)."""
        requeued, dead = await self._eval("reap", _REAP, [self._k("processing"), self._k("dead"),
                                                          self._k("lease_expiries")], [self.p, self.max_attempts])
        return int(requeued), int(dead)

    async def is_cancelled(self, job_id: str) -> bool:
        return bool(await self._call("is_cancelled", self._redis.exists, self._k("cancel", job_id)))

    # ## Progress events

    async def publish(self, job_id: str, event: Event) -> str:
        """Append to the job's event stream, capped at EVENTS_MAXLEN; every write refreshes its expiry
        (EVENTS_TTL_S), so the stream of a job that died mid-way goes too."""
        return str(await self._eval("publish", _PUBLISH, [self._k("events", job_id), self._k("trim", job_id)],
                                    [event.model_dump_json(), self.events_maxlen, self.events_ttl_s]))

    async def events(self, job_id: str, after: str | None = None, count: int = 100) -> list[QueuedEvent]:
        """Events after `after` (exclusive), oldest first: resume from the last id seen.

        When events after `after` were trimmed away, a `gap` event comes first. Its id is the last
        id trimmed: resuming from it is not a gap again.
        """
        start = f"({after}" if after else "-"
        trimmed, rows = await self._eval("events", _EVENTS, [self._k("events", job_id), self._k("trim", job_id)],
                                         [start, count])
        out = [QueuedEvent(eid, parse_event(dict(_pairs(fields))["data"])) for eid, fields in rows]
        if trimmed and (after is None or _stream_id(after) < _stream_id(trimmed)):
            out.insert(0, QueuedEvent(trimmed, GapEvent(job_id=job_id, missed_after=after)))
        return out

    # ## Inspection

    def _views(self) -> list[str]:
        return [*(self._k("q", p) for p in PRIORITIES), self._k("processing"), self._k("delayed"), self._k("dead")]

    async def stats(self) -> dict[str, int]:
        """Entries in each lane (`queued_high`, `queued_default`, `queued_train`), `running` (leased),
        `retrying` (waiting out a backoff), `dead`, and `lease_expiries` (leases reaped since the queue began)."""
        out = await self._eval("stats", _STATS, [*self._views(), self._k("lease_expiries")], [])
        names = [*(f"queued_{p}" for p in PRIORITIES), "running", "retrying", "dead", "lease_expiries"]
        return {k: int(v) for k, v in zip(names, out, strict=True)}

    async def waiting(self) -> int:
        """Jobs waiting for a worker: queued at any priority, or waiting out a retry backoff."""
        return waiting(await self.stats())

    async def list(self) -> dict[str, list[str]]:
        out = await self._eval("list", _LIST, self._views(), [])
        names = [*(f"queued_{p}" for p in PRIORITIES), "running", "retrying"]
        lists = dict(zip(names, out, strict=True))
        for p in PRIORITIES:  # RPOP takes from the right: show the next job first
            lists[f"queued_{p}"] = list(reversed(lists[f"queued_{p}"]))
        return lists

    async def dead(self) -> list[dict[str, str]]:
        ids = await self._call("dead", self._redis.lrange, self._k("dead"), 0, -1)
        out = []
        for job_id in ids:
            meta = await self._call("dead", self._redis.hgetall, self._k("meta", job_id))
            out.append({"id": job_id, **meta})
        return out

    async def requeue(self, job_id: str) -> bool:
        """Move a dead-lettered job back to its queue with a fresh attempt count."""
        meta = await self._call("requeue", self._redis.hgetall, self._k("meta", job_id))
        priority = meta.get("priority", "default")
        return bool(await self._eval("requeue", _REQUEUE, [self._k("dead"), self._k("meta", job_id),
                                     self._k("q", priority)], [job_id]))

    async def close(self) -> None:
        await self._redis.close()


def waiting(stats: dict[str, int]) -> int:
    """The waiting count from `JobQueue.stats()`: queued at any priority plus retrying."""
    return sum(stats[f"queued_{p}"] for p in PRIORITIES) + stats["retrying"]


def _stream_id(event_id: str) -> tuple[int, int]:
    """A stream id ("<ms>-<seq>") as a pair that orders as the stream does."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def _pairs(fields: Any) -> list[tuple[str, str]]:
    if isinstance(fields, dict):
        return list(fields.items())
    return list(zip(fields[::2], fields[1::2], strict=True))
