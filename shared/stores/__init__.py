"""Where results live. Chosen by Settings: Supabase, then DATABASE_URL, then a local SQLite file."""

from __future__ import annotations

from shared.contracts.settings import Settings
from shared.stores.base import Store


def open_store(settings: Settings) -> Store:
    """The store Settings configure (clients are created lazily; nothing connects here)."""
    if settings.supabase_url and settings.supabase_service_role_key:
        from shared.stores.supabase import SupabaseStore

        return SupabaseStore(settings.supabase_url, settings.supabase_service_role_key.get_secret_value(),
                             timeout_s=settings.store_timeout_s)
    if settings.database_url:
        from shared.stores.postgres import PostgresStore

        return PostgresStore(settings.database_url.get_secret_value(), timeout_s=settings.store_timeout_s,
                             pool_size=settings.store_pool_size)
    from shared.stores.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path, timeout_s=settings.store_timeout_s)


def describe_store(settings: Settings) -> str:
    """Where results go, for humans (no secrets)."""
    if settings.supabase_url and settings.supabase_service_role_key:
        return f"supabase {settings.supabase_url}"
    if settings.database_url:
        from urllib.parse import urlsplit

        u = urlsplit(settings.database_url.get_secret_value())
        return f"postgres {u.hostname}:{u.port or 5432}{u.path}"
    return f"sqlite {settings.sqlite_path}"


__all__ = ["Store", "describe_store", "open_store"]
