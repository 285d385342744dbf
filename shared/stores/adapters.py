"""The store's adapters table (supabase/migrations/*_adapters.sql; shared/contracts/adapters.py): the
`AdapterStore` protocol every backend keeps, beside `Store`, as a small mixin of its own
(`sqlite_adapters.py`, `postgres_adapters.py`, `supabase_adapters.py`).

One row per adapter name: `put_adapter` records it, or replaces the base model and path of the one of
that name (its `created_at` stays); only the service role reads or writes it on Supabase.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.contracts.adapters import AdapterRecord

#: the columns a put writes (created_at is the database's)
ADAPTER_COLUMNS = ("name", "base_model", "path")


class AdapterStore(Protocol):
    async def put_adapter(self, rec: AdapterRecord) -> None:
        """Record the adapter, or replace the base model and path of the one of that name."""

    async def get_adapter(self, name: str) -> AdapterRecord | None: ...

    async def list_adapters(self) -> list[AdapterRecord]:
        """Every adapter, by name."""

    async def remove_adapter(self, name: str) -> bool:
        """Forget it; False: there was none of that name."""


def adapter_row(rec: AdapterRecord) -> dict[str, Any]:
    return {c: getattr(rec, c) for c in ADAPTER_COLUMNS}


def row_adapter(row: Any) -> AdapterRecord:
    return AdapterRecord.model_validate({k: v for k, v in dict(row).items() if k in AdapterRecord.model_fields})
