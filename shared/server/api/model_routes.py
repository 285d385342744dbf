"""`GET /v1/models`: the model this deployment serves and its LoRA adapters, as OpenAI lists models.

A job names the model (`model`) or one of the adapters (`adapter`). The list comes from
`JobLifecycle.serving` (shared/server/models.py): the engine's, when it runs in this process, else the
configured model and the store's adapters made for it.
"""

from __future__ import annotations

from fastapi import APIRouter

from shared.server.api.app import AppState, Caller
from shared.server.api.routes import ERRORS
from shared.server.api.schemas import ModelList

models = APIRouter(prefix="/v1/models", tags=["models"])


@models.get("", response_model=ModelList, responses=ERRORS)
async def list_models(state: AppState, who: Caller) -> ModelList:
    """The base model (`parent` null), then each adapter over it (`parent` the base model)."""
    return ModelList.model_validate((await state.lifecycle.serving()).listing())
