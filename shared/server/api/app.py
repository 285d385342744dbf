"""The HTTP API: submit a job, follow it live (SSE), read its results, cancel it.

    create_app(settings) -> FastAPI      # `llm-jobs serve`, or mounted by modal_app.py

Routes (shared/server/api/routes.py; all under /v1 need `Authorization: Bearer <key>` when
API_KEYS is set):
    POST /v1/jobs                    a Job (JSON), or items / OpenAI Batch lines (JSONL) -> 202 (200 if known)
    GET  /v1/jobs                    the most recent jobs (?status=&limit=)
    GET  /v1/jobs/{id}               status and progress, from the store
    GET  /v1/jobs/{id}/results       ?after=&limit=&format=ours|openai, paginated by custom_id
    GET  /v1/jobs/{id}/events        Server-Sent Events; Last-Event-ID resumes; ends after `final`
    POST /v1/jobs/{id}/cancel
    GET  /healthz                    the process is up
    GET  /readyz                     the store and the dispatcher answer, with details

Every route is a thin layer over `JobLifecycle` (shared/server/lifecycle.py).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from shared.contracts.errors import ConfigError, InputError, LLMJobsError, NotFound, QueueError, StoreError
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings, get_settings
from shared.queue.runpod import RunpodError
from shared.server.api.auth import KeyRing, MemoryRateLimit, UpstashRateLimit, rate_limiter
from shared.server.api.schemas import JobIn
from shared.server.dispatch import Dispatcher, make_dispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores import Store, open_store


class State:
    def __init__(self, settings: Settings, lifecycle: JobLifecycle, keys: KeyRing,
                 limiter: MemoryRateLimit | UpstashRateLimit | None):
        self.settings, self.lifecycle, self.keys, self.limiter = settings, lifecycle, keys, limiter
        self.limits = Limits.from_settings(settings)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               dispatcher: Dispatcher | None = None) -> FastAPI:
    settings = settings or get_settings()
    store = store or open_store(settings)
    lifecycle = JobLifecycle(store, dispatcher or make_dispatcher(settings, store), settings)
    state = State(settings, lifecycle, KeyRing.from_setting(settings.api_keys), rate_limiter(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if state.limiter is not None:
            await state.limiter.close()
        await state.lifecycle.close()

    app = _routes_only(lifespan)
    app.state.llm_jobs = state
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                           expose_headers=["Retry-After", "X-RateLimit-Remaining"])
    return app


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (openapi.json): it depends on the routes alone, no deployment."""
    return _routes_only().openapi()


def _routes_only(lifespan: Any = None) -> FastAPI:
    from shared.server.api.routes import health, jobs

    app = FastAPI(title="llm-jobs", version="0.1.0", lifespan=lifespan,
                  description="Batch LLM jobs: submit, follow live, read results, cancel. "
                              "Every result is stored once; events stream as chunks are stored.")
    _errors(app)
    app.include_router(health)
    app.include_router(jobs)
    app.openapi = lambda: _openapi(app)
    return app


def create_public_app(settings: Settings, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    """`create_app` for a public deployment (Modal's web function): it refuses to run open."""
    if not settings.api_keys:
        raise ConfigError("set API_KEYS (in the llm-jobs-config secret): the API on Modal is public")
    return create_app(settings, dispatcher=dispatcher)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def invalid(request: Request, e: InputError) -> JSONResponse:
        return JSONResponse({"detail": [i.as_dict() for i in e.issues]}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(LLMJobsError)
    async def unavailable(request: Request, e: LLMJobsError) -> JSONResponse:
        code = 502 if isinstance(e, RunpodError) else 503 if isinstance(e, (StoreError, QueueError)) else 500
        return JSONResponse({"detail": str(e)}, status_code=code)


def state_of(request: Request) -> State:
    return request.app.state.llm_jobs


async def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    state = state_of(request)
    who = "anonymous"
    if state.keys.enabled:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "send Authorization: Bearer <API key>", headers={"WWW-Authenticate": "Bearer"})
        key_id = state.keys.identify(authorization[7:].strip())
        if key_id is None:
            raise HTTPException(403, "this API key is not valid")
        who = key_id
    if state.limiter is not None:
        verdict = await state.limiter.check(who)
        if not verdict.allowed:
            raise HTTPException(429, f"over {verdict.limit} requests a minute",
                                headers={"Retry-After": str(math.ceil(verdict.reset_s))})
    return who


#: the caller's key id, once authenticated and under the rate limit
Caller = Annotated[str, Depends(_caller)]
#: the app's State (settings, lifecycle, limits)
AppState = Annotated[State, Depends(state_of)]


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    job_schema = JobIn.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(job_schema.pop("$defs", {}))
    components["JobIn"] = job_schema
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, ops in schema["paths"].items():
        if path.startswith("/v1/"):
            for op in ops.values():
                op["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
