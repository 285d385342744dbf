"""The adapters table on Supabase (shared/stores/adapters.py): `SupabaseStore`'s share of `AdapterStore`.

A put is an upsert on the name that sends every column but `created_at`, so a row made earlier keeps it;
`replace=False` asks PostgREST to ignore a duplicate (`on conflict do nothing`). Config and metrics go and
come back as JSON objects (jsonb). A list is one request: adapters are few (a page of `_PAGE` at a time all
the same).
"""

from __future__ import annotations

from typing import Any

from postgrest.types import ReturnMethod

from shared.contracts.adapters import AdapterRecord
from shared.stores.adapters import adapter_row, row_adapter


class SupabaseAdapters:
    """The `AdapterStore` methods; the class it is mixed into gives `_mapped` and `_pages`."""

    _mapped: Any
    _pages: Any

    async def put_adapter(self, rec: AdapterRecord, *, replace: bool = True) -> None:
        async with self._mapped("put_adapter") as db:
            await db.table("adapters").upsert(adapter_row(rec), on_conflict="name", ignore_duplicates=not replace,
                                              returning=ReturnMethod.minimal).execute()

    async def get_adapter(self, name: str) -> AdapterRecord | None:
        async with self._mapped("get_adapter") as db:
            rows = (await db.table("adapters").select("*").eq("name", name).limit(1).execute()).data
        return row_adapter(rows[0]) if rows else None

    async def list_adapters(self) -> list[AdapterRecord]:
        rows = await self._pages("list_adapters", "adapters", "name", "", lambda q: q)
        return [row_adapter(r) for r in rows]

    async def remove_adapter(self, name: str) -> bool:
        async with self._mapped("remove_adapter") as db:
            rows = (await db.table("adapters").delete(returning=ReturnMethod.representation)
                    .eq("name", name).execute()).data
        return bool(rows)
