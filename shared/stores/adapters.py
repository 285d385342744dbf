"""The store's adapters table (supabase/migrations/*_adapters.sql, *_adapter_training.sql;
shared/contracts/adapters.py): the `AdapterStore` protocol every backend keeps, beside `Store`, as a small
mixin of its own (`sqlite_adapters.py`, `postgres_adapters.py`, `supabase_adapters.py`).

One row per adapter name: `put_adapter` records it, or replaces everything but the name and `created_at`
of the one of that name; with `replace=False` it records only a name the store does not know yet (an
engine's ADAPTERS_DIR, handler/adapters.py). A trained adapter also keeps its training `config`, `metrics`
(JSON objects) and `job_id`. Only the service role reads or writes it on Supabase.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.contracts.adapters import AdapterRecord

#: the columns a put writes (created_at is the database's)
ADAPTER_COLUMNS = ("name", "base_model", "path", "config", "metrics", "job_id")
#: those that hold a JSON object (jsonb on Postgres, text on SQLite)
ADAPTER_JSON = ("config", "metrics")


class AdapterStore(Protocol):
    async def put_adapter(self, rec: AdapterRecord, *, replace: bool = True) -> None:
        """Record the adapter. One of that name already there: `replace` (the default) replaces its base
        model, path, config, metrics and job id with the record's, None included, and keeps its
        `created_at`; `replace=False` leaves it as it is, all of it.

        An explicit put (`llm-jobs adapters add`, a training job) replaces: what it says is the adapter now,
        and a hand-made record does not keep a trained one's figures. An engine publishing its
        ADAPTERS_DIR at boot (handler/adapters.py `publish`) puts with `replace=False`: it knows only a
        directory, so a re-publish of a trained adapter's directory never wipes its config, metrics or
        job, nor moves a path someone recorded (the engine itself loads its ADAPTERS_DIR's copy first).
        Either is one atomic statement: an engine's boot cannot undo a training job's put, whichever
        comes first."""

    async def get_adapter(self, name: str) -> AdapterRecord | None: ...

    async def list_adapters(self) -> list[AdapterRecord]:
        """Every adapter, by name."""

    async def remove_adapter(self, name: str) -> bool:
        """Forget it; False: there was none of that name."""


def adapter_row(rec: AdapterRecord) -> dict[str, Any]:
    """The columns a put writes; config and metrics as dicts (each backend encodes them its own way)."""
    return {c: getattr(rec, c) for c in ADAPTER_COLUMNS}


def row_adapter(row: Any) -> AdapterRecord:
    return AdapterRecord.model_validate({k: v for k, v in dict(row).items() if k in AdapterRecord.model_fields})
