"""The adapters table on Postgres (shared/stores/adapters.py): a mixin of PostgresStore, on its pool."""

from __future__ import annotations

from typing import Any

from shared.contracts.adapters import AdapterRecord
from shared.stores.adapters import ADAPTER_COLUMNS, adapter_row, row_adapter

_PUT = (f"insert into adapters ({', '.join(ADAPTER_COLUMNS)}) values ({', '.join(['%s'] * len(ADAPTER_COLUMNS))}) "
        "on conflict (name) do update set base_model = excluded.base_model, path = excluded.path")


class PostgresAdapters:
    """`AdapterStore` for PostgresStore: needs its `_cursor`."""

    _cursor: Any

    async def put_adapter(self, rec: AdapterRecord) -> None:
        row = adapter_row(rec)
        async with self._cursor() as cur:
            await cur.execute(_PUT, tuple(row[c] for c in ADAPTER_COLUMNS))

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
