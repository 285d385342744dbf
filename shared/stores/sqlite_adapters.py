"""The adapters table on SQLite (shared/stores/adapters.py): a mixin of SQLiteStore, on its connection.

Config and metrics are JSON text here (jsonb on Postgres). A file made before issue 16 gets their columns
when a store opens it (ADAPTER_ADDED_COLUMNS, through shared/stores/sqlite.py `ADDED_COLUMNS`).
"""

from __future__ import annotations

import json
from typing import Any

from shared.contracts.adapters import AdapterRecord
from shared.stores.adapters import ADAPTER_COLUMNS, ADAPTER_JSON, adapter_row, row_adapter

ADAPTER_SCHEMA = """
create table if not exists adapters (
  name text primary key, base_model text, path text not null,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  config text, metrics text, job_id text
);
"""

#: columns added after the adapters table first shipped (supabase/migrations/*_adapter_training.sql)
ADAPTER_ADDED_COLUMNS = {"adapters": {"config": "text", "metrics": "text", "job_id": "text"}}

_INSERT = f"insert into adapters ({', '.join(ADAPTER_COLUMNS)}) values ({', '.join('?' * len(ADAPTER_COLUMNS))}) "
_PUT = _INSERT + "on conflict (name) do update set " + ", ".join(f"{c} = excluded.{c}" for c in ADAPTER_COLUMNS[1:])
_PUT_NEW = _INSERT + "on conflict (name) do nothing"


def _encoded(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(json.dumps(row[c], ensure_ascii=False) if c in ADAPTER_JSON and row[c] is not None else row[c]
                 for c in ADAPTER_COLUMNS)


def _decoded(row: Any) -> AdapterRecord:
    got = dict(row)
    for c in ADAPTER_JSON:
        if got.get(c) is not None:
            got[c] = json.loads(got[c])
    return row_adapter(got)


class SQLiteAdapters:
    """`AdapterStore` for SQLiteStore: needs its `_run`."""

    _run: Any

    async def put_adapter(self, rec: AdapterRecord, *, replace: bool = True) -> None:
        await self._run(_PUT if replace else _PUT_NEW, _encoded(adapter_row(rec)))

    async def get_adapter(self, name: str) -> AdapterRecord | None:
        rows = await self._run("select * from adapters where name = ?", (name,), fetch=True)
        return _decoded(rows[0]) if rows else None

    async def list_adapters(self) -> list[AdapterRecord]:
        return [_decoded(r) for r in await self._run("select * from adapters order by name", fetch=True)]

    async def remove_adapter(self, name: str) -> bool:
        return bool(await self._run("delete from adapters where name = ? returning name", (name,), fetch=True))
