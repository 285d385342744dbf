"""The HTTP API (FastAPI), built by a factory so uvicorn runs it and Modal mounts it."""

from shared.api.app import create_app

__all__ = ["create_app"]
