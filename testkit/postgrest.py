"""A small PostgREST, as an httpx transport over a real PostgreSQL, for testing the Supabase store
through the real supabase-py client (there is no PostgREST server here).

It carries out what PostgREST does for the requests llm-jobs makes, the way PostgREST does it:
- auth: the `apikey` header and `Authorization: Bearer` must carry the key (else 401 PGRST301);
- GET /rest/v1/<table>?select=&<col>=<op>.<value>&order=&limit=&offset= (eq, neq, gt, gte, lt,
  lte, is, in), answered with `json_agg` of the rows, as PostgREST does; an `in.(a,"b,c")` list is
  read as PostgREST reads it (double-quoted elements, backslash escapes within them; `in.()` matches
  nothing);
- POST (insert / upsert): rows go through `json_populate_recordset(null::<table>, body)` over
  the `columns` parameter, so a key a row lacks becomes NULL (`missing=default` is honoured),
  with `on_conflict` and `Prefer: resolution=merge-duplicates|ignore-duplicates`;
- PATCH with filters (any of the above, `in` included): only the keys sent are set, in one UPDATE,
  so a PATCH filtered on a column it sets is atomic; with `return=representation` the rows it
  updated come back (200, `[]` when none matched);
- DELETE with filters (as PATCH; none deletes every row, as PostgREST allows unless configured
  otherwise): one DELETE; with `return=representation` the rows it deleted come back (200), else 204;
- `Prefer: return=minimal|representation`, `Prefer: count=exact` on writes (`Content-Range: */N`,
  N the rows written) and on reads (`Content-Range: 0-9/N`, N the rows the filters match); HEAD, a read's
  headers alone (`select(..., count="exact", head=True)`); a filter may name a column twice
  (`idx=gte.0&idx=lt.9`), and compares as the column's type; Postgres errors as `{code, message, details, hint}`
  with PostgREST's status codes; a database it cannot reach is a 503 PGRST001.
(`Prefer: missing=default` is refused: llm-jobs always sends every column.)
It connects as a superuser, like the service role, so row-level security does not apply.
Every request is recorded in `.log` for wire checks, with its body's size in bytes and its URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any = field(default=None)
    size: int = 0
    #: the whole URL as sent (its length is what proxies limit)
    url: str = ""


#: PostgREST's HTTP status for a Postgres error: exact SQLSTATEs first, then by class (the first two
#: characters); anything else is a 400 (PostgREST's "Errors from PostgreSQL" table)
_STATUS_EXACT = {"23503": 409, "23505": 409, "25006": 405, "42501": 403, "42883": 404, "42P01": 404, "P0001": 400}
_STATUS_CLASS = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
                 "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
                 "F0": 500, "HV": 500, "P0": 500, "XX": 500}


def _in_list(value: str, expr: str) -> list[str]:
    """The values of an `in.(...)` filter as PostgREST's parser reads them: comma-separated, each either
    double-quoted (a backslash escapes the next character; commas and parentheses are kept) or bare
    (up to the next comma or closing parenthesis, taken as it is)."""
    bad = PostgrestError(400, "PGRST100", f'"failed to parse filter (in.{value})"', f"in filter: {expr}")
    if not (value.startswith("(") and value.endswith(")")):
        raise bad
    body, out, k = value[1:-1], [], 0
    if body == "":
        return []
    while True:
        if k < len(body) and body[k] == '"':
            k += 1
            chars = []
            while k < len(body) and body[k] != '"':
                if body[k] == "\\":
                    k += 1
                    if k == len(body):
                        raise bad
                chars.append(body[k])
                k += 1
            if k == len(body):  # no closing quote
                raise bad
            k += 1
            out.append("".join(chars))
        else:
            end = k
            while end < len(body) and body[end] not in ",)":
                end += 1
            if end < len(body) and body[end] == ")":
                raise bad
            out.append(body[k:end])
            k = end
        if k == len(body):
            return out
        if body[k] != ",":
            raise bad
        k += 1


def _status(state: str) -> int:
    return _STATUS_EXACT.get(state) or _STATUS_CLASS.get(state[:2], 400)


def _unreachable(e: BaseException) -> httpx.Response:
    return httpx.Response(503, json={"code": "PGRST001", "message": "Database client error. Retrying the "
                                     "connection.", "details": str(e), "hint": None})


def _written(prefer: dict[str, str], rows: int) -> dict[str, str]:
    """PostgREST's Content-Range on a write: the rows written when `Prefer: count=exact` asked."""
    return {"content-range": f"*/{rows}" if prefer.get("count") == "exact" else "*/*"}


class PostgrestError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None):
        self.status, self.body = status, {"code": code, "message": message, "details": details, "hint": hint}


#: the tables the adapter serves (what the service role reaches through PostgREST)
TABLES = ("jobs", "job_results", "job_items", "files", "file_items", "api_keys", "eval_suites", "eval_suite_versions",
          "eval_cases", "eval_runs", "eval_case_results", "eval_schedules", "eval_schedule_slots", "adapters")


class PostgrestTransport(httpx.AsyncBaseTransport):
    def __init__(self, dsn: str, key: str,
                 tables: tuple[str, ...] = TABLES):
        self.key = key
        self.tables = tables
        self.log: list[Seen] = []
        self.pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False, timeout=2,
                                        kwargs={"autocommit": True}, check=AsyncConnectionPool.check_connection)
        self._columns: dict[str, list[str]] = {}
        self._numeric: dict[str, dict[str, str]] = {}  # table -> numeric column -> its type

    async def aclose(self) -> None:
        await self.pool.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        params = dict(request.url.params)
        self.log.append(Seen(request.method, request.url.path, params, dict(request.headers), body,
                             len(request.content), str(request.url)))
        pairs = request.url.params.multi_items()
        try:
            self._auth(request)
            table = self._table(request.url.path)
            prefer = dict(p.strip().split("=", 1) for p in request.headers.get("prefer", "").split(",") if "=" in p)
            if self.pool.closed:
                await self.pool.open(wait=False)
            async with self.pool.connection() as conn:
                cols = await self._table_columns(conn, table)
                if request.method in ("GET", "HEAD"):
                    return await self._select(conn, table, params, pairs, cols, prefer, head=request.method == "HEAD")
                if request.method == "POST":
                    return await self._insert(conn, table, params, prefer, body, cols)
                if request.method == "PATCH":
                    return await self._update(conn, table, pairs, prefer, body, cols)
                if request.method == "DELETE":
                    return await self._delete(conn, table, pairs, prefer, cols)
                raise PostgrestError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")
        except PostgrestError as e:
            return httpx.Response(e.status, json=e.body)
        except PoolTimeout as e:
            return _unreachable(e)
        except psycopg.Error as e:
            if isinstance(e, psycopg.OperationalError) and (e.sqlstate is None or e.sqlstate.startswith("08")):
                return _unreachable(e)  # the connection, not the statement: PostgREST retries it
            state = e.sqlstate or "XX000"
            diag = e.diag
            status = _status(state)
            return httpx.Response(status, json={"code": state, "message": diag.message_primary or str(e),
                                                "details": diag.message_detail, "hint": diag.message_hint})

    # ## Pieces

    def _auth(self, request: httpx.Request) -> None:
        if request.headers.get("apikey") != self.key or request.headers.get("authorization") != f"Bearer {self.key}":
            raise PostgrestError(401, "PGRST301", "JWSError JWSInvalidSignature")

    def _table(self, path: str) -> str:
        prefix = "/rest/v1/"
        name = path[len(prefix):] if path.startswith(prefix) else ""
        if name not in self.tables:
            raise PostgrestError(404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache")
        return name

    async def _table_columns(self, conn: psycopg.AsyncConnection, table: str) -> list[str]:
        if table not in self._columns:
            cur = await conn.execute("select column_name, data_type from information_schema.columns where "
                                     "table_schema = 'public' and table_name = %s order by ordinal_position",
                                     (table,))
            rows = await cur.fetchall()
            self._columns[table] = [r[0] for r in rows]
            # columns PostgREST compares as their type, not as text: numbers (9 < 10) and times
            self._numeric[table] = {r[0]: r[1] for r in rows if r[1] in (
                "smallint", "integer", "bigint", "numeric", "real", "double precision", "timestamp with time zone",
                "timestamp without time zone")}
        return self._columns[table]

    @staticmethod
    def _check(names: list[str], cols: list[str], table: str) -> list[str]:
        for n in names:
            if n not in cols:
                raise PostgrestError(400, "PGRST204",
                                     f"Could not find the '{n}' column of '{table}' in the schema cache")
        return names

    def _where(self, pairs: list[tuple[str, str]], cols: list[str], table: str) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        args: list[Any] = []
        for name, expr in pairs:
            if name in _RESERVED:
                continue
            self._check([name], cols, table)
            op, _, value = expr.partition(".")
            ident = sql.Identifier(name)
            if op in _OPS and name in self._numeric.get(table, {}):  # 9 < 10, as numbers (and by the index)
                kind = self._numeric[table][name]
                parts.append(sql.SQL("{} {} %s::" + kind).format(ident, sql.SQL(_OPS[op])))
                args.append(value)
            elif op in _OPS:
                parts.append(sql.SQL("{}::text {} %s").format(ident, sql.SQL(_OPS[op])) if op != "eq" else
                             sql.SQL("{}::text = %s").format(ident))
                args.append(value)
            elif op == "is" and value in ("null", "true", "false"):
                parts.append(sql.SQL("{} is " + value).format(ident))
            elif op == "in":
                values = _in_list(value, expr)
                if name in self._numeric.get(table, {}):
                    parts.append(sql.SQL("{} = any(%s::" + self._numeric[table][name] + "[])").format(ident))
                else:
                    parts.append(sql.SQL("{}::text = any(%s::text[])").format(ident))
                args.append(values)
            else:
                raise PostgrestError(400, "PGRST100", f'"failed to parse filter ({expr})"')
        where = sql.SQL(" where ") + sql.SQL(" and ").join(parts) if parts else sql.SQL("")
        return where, args

    async def _json(self, conn: psycopg.AsyncConnection, query: sql.Composable, args: list[Any]) -> Any:
        # a CTE, not a subquery: it also holds an insert/update ... returning (Prefer: return=representation)
        wrapped = sql.SQL("with t as ({}) select coalesce(json_agg(t), '[]'::json) from t").format(query)
        cur = await conn.execute(wrapped, args)
        return (await cur.fetchone())[0]

    async def _select(self, conn, table: str, params: dict[str, str], pairs, cols: list[str], prefer: dict[str, str],
                      *, head: bool = False) -> httpx.Response:
        select = params.get("select", "*")
        names = cols if select == "*" else self._check(select.split(","), cols, table)
        where, args = self._where(pairs, cols, table)
        query = sql.SQL("select {} from {}{}").format(sql.SQL(", ").join(map(sql.Identifier, names)),
                                                    sql.Identifier(table), where)
        if "order" in params:
            terms = []
            for term in params["order"].split(","):
                col, _, direction = term.partition(".")
                self._check([col], cols, table)
                terms.append(sql.SQL("{} {}").format(sql.Identifier(col), sql.SQL("desc" if direction.startswith(
                    "desc") else "asc")))
            query += sql.SQL(" order by ") + sql.SQL(", ").join(terms)
        if "limit" in params:
            query += sql.SQL(" limit {}").format(sql.Literal(int(params["limit"])))
        if "offset" in params:
            query += sql.SQL(" offset {}").format(sql.Literal(int(params["offset"])))
        total = "*"
        if prefer.get("count") == "exact":  # the rows the filters match, limit and offset aside
            cur = await conn.execute(sql.SQL("select count(*) from {}{}").format(sql.Identifier(table), where), args)
            total = str((await cur.fetchone())[0])
        if head:  # PostgREST's HEAD: the headers a GET would have, no body (and no rows read)
            return httpx.Response(200, headers={"content-range": f"*/{total}"})
        rows = await self._json(conn, query, args)
        first = int(params.get("offset", 0))
        span = f"{first}-{first + len(rows) - 1}" if rows else "*"
        return httpx.Response(200, json=rows, headers={"content-range": f"{span}/{total}"})

    async def _insert(self, conn, table, params, prefer, body, cols) -> httpx.Response:
        rows = body if isinstance(body, list) else [body]
        # PostgREST accepts quoted identifiers in `columns` (postgrest-py quotes them)
        names = [c.strip().strip('"') for c in params["columns"].split(",")] if "columns" in params else list(rows[0])
        self._check(names, cols, table)
        t = sql.Identifier(table)
        col_list = sql.SQL(", ").join(map(sql.Identifier, names))
        if prefer.get("missing") == "default":
            raise PostgrestError(400, "TEST0", "this test adapter does not implement Prefer: missing=default")
        # a key a row lacks comes out of json_populate_recordset as NULL, as in PostgREST
        source = sql.SQL("select {} from json_populate_recordset(null::{}, %s::json)").format(col_list, t)
        query = sql.SQL("insert into {} ({}) ").format(t, col_list) + source
        conflict = params.get("on_conflict")
        resolution = prefer.get("resolution")
        if resolution and conflict:
            keys = self._check(conflict.split(","), cols, table)
            target = sql.SQL(", ").join(map(sql.Identifier, keys))
            updates = [n for n in names if n not in keys]
            if resolution == "ignore-duplicates" or not updates:
                query += sql.SQL(" on conflict ({}) do nothing").format(target)
            else:
                query += sql.SQL(" on conflict ({}) do update set {}").format(target, sql.SQL(", ").join(
                    sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in updates))
        return await self._write(conn, query, [json.dumps(rows)], prefer, 201)

    async def _update(self, conn, table, pairs, prefer, body, cols) -> httpx.Response:
        names = self._check(list(body), cols, table)
        where, args = self._where(pairs, cols, table)
        col_list = sql.SQL(", ").join(map(sql.Identifier, names))
        query = sql.SQL("update {t} set ({c}) = (select {c} from json_populate_record(null::{t}, %s::json)){w}").format(
            t=sql.Identifier(table), c=col_list, w=where)
        return await self._write(conn, query, [json.dumps(body), *args], prefer, 204)

    async def _delete(self, conn, table, pairs, prefer, cols) -> httpx.Response:
        where, args = self._where(pairs, cols, table)
        query = sql.SQL("delete from {}{}").format(sql.Identifier(table), where)
        return await self._write(conn, query, args, prefer, 204)

    async def _write(self, conn, query, args, prefer, minimal_status: int) -> httpx.Response:
        if prefer.get("return") == "representation":
            rows = await self._json(conn, query + sql.SQL(" returning *"), args)
            return httpx.Response(200 if minimal_status == 204 else 201, json=rows,
                                  headers=_written(prefer, len(rows)))
        cur = await conn.execute(query, args)
        return httpx.Response(minimal_status, headers=_written(prefer, cur.rowcount))
