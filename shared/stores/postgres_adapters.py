"""The adapters table on Postgres (shared/stores/adapters.py): a mixin of PostgresStore, on its pool.
Config and metrics are jsonb: they go as `Jsonb` and come back as dicts."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from shared.contracts.adapters import AdapterRecord
from shared.stores.adapters import ADAPTER_COLUMNS, ADAPTER_JSON, adapter_row, row_adapter

_INSERT = (f"insert into adapters ({', '.join(ADAPTER_COLUMNS)}) "
           f"values ({', '.join(['%s'] * len(ADAPTER_COLUMNS))}) ")
_PUT = _INSERT + "on conflict (name) do update set " + ", ".join(f"{c} = excluded.{c}" for c in ADAPTER_COLUMNS[1:])
_PUT_NEW = _INSERT + "on conflict (name) do nothing"


class PostgresAdapters:
    """`AdapterStore` for PostgresStore: needs its `_cursor`."""

    _cursor: Any

    async def put_adapter(self, rec: AdapterRecord, *, replace: bool = True) -> None:
        row = adapter_row(rec)
        values = tuple(Jsonb(row[c]) if c in ADAPTER_JSON and row[c] is not None else row[c] for c in ADAPTER_COLUMNS)
        async with self._cursor() as cur:
            await cur.execute(_PUT if replace else _PUT_NEW, values)

    async def get_adapter(self, name: str) -> AdapterRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from adapters where name = %s", (name,))
            row = await cur.fetchone()
        return row_adapter(row) if row else None

    async def list_adapters(self) -> list[AdapterRecord]:
        async with self._cursor() as cur:
            await cur.execute("select * from adapters order by name")
            return [row_adapter(r) for r in await cur.fetchall()]

    async def remove_adapter(self, name: str) -> bool:
        async with self._cursor() as cur:
            await cur.execute("delete from adapters where name = %s returning name", (name,))
            return await cur.fetchone() is not None
