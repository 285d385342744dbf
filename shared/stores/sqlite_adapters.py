"""The adapters table on SQLite (shared/stores/adapters.py): a mixin of SQLiteStore, on its connection."""

from __future__ import annotations

from typing import Any

from shared.contracts.adapters import AdapterRecord
from shared.stores.adapters import ADAPTER_COLUMNS, adapter_row, row_adapter

ADAPTER_SCHEMA = """
create table if not exists adapters (
  name text primary key, base_model text, path text not null,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ'))
);
"""

_PUT = (f"insert into adapters ({', '.join(ADAPTER_COLUMNS)}) values ({', '.join('?' * len(ADAPTER_COLUMNS))}) "
        "on conflict (name) do update set base_model = excluded.base_model, path = excluded.path")


class SQLiteAdapters:
    """`AdapterStore` for SQLiteStore: needs its `_run`."""

    _run: Any

    async def put_adapter(self, rec: AdapterRecord) -> None:
        row = adapter_row(rec)
        await self._run(_PUT, tuple(row[c] for c in ADAPTER_COLUMNS))

    async def get_adapter(self, name: str) -> AdapterRecord | None:
        rows = await self._run("select * from adapters where name = ?", (name,), fetch=True)
        return row_adapter(rows[0]) if rows else None

    async def list_adapters(self) -> list[AdapterRecord]:
        return [row_adapter(r) for r in await self._run("select * from adapters order by name", fetch=True)]

    async def remove_adapter(self, name: str) -> bool:
        return bool(await self._run("delete from adapters where name = ? returning name", (name,), fetch=True))
