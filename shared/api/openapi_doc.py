"""The API's OpenAPI document, independent of any deployment's settings (for openapi.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.settings import Settings


def openapi_document() -> dict[str, Any]:
    from shared.api.app import create_app
    from shared.api.dispatch import LocalDispatcher
    from shared.stores.sqlite import SQLiteStore

    settings = Settings(_env_file=None, dispatcher="local")
    store = SQLiteStore(Path("unused.db"))  # never opened: building the document touches no store
    return create_app(settings, store=store, dispatcher=LocalDispatcher(settings, store)).openapi()
