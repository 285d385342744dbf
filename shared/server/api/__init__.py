"""The HTTP API (FastAPI), built by a factory so uvicorn runs it and Modal mounts it."""

from shared.server.api.app import create_app, create_public_app

__all__ = ["create_app", "create_public_app"]
