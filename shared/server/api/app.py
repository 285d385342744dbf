"""The HTTP API: submit a job, follow it live (SSE), read its results, cancel it.

    create_app(settings) -> FastAPI      # `llm-jobs serve`, or mounted by modal_app.py

Routes (shared/server/api/routes.py; all under /v1 need `Authorization: Bearer <token>` when
credentials are configured: an owner's key, a Supabase access token, or an admin key; see
credentials.py. An owner sees only their own jobs, files and batches: tenancy.py):
    POST /v1/jobs                    a Job (JSON), or items / OpenAI Batch lines (JSONL) -> 202 (200 if known)
    GET  /v1/jobs                    your jobs, newest first (?status=&limit=&after=; keyset pages)
    GET  /v1/jobs/{id}               status and progress, from the store
    GET  /v1/jobs/{id}/results       ?after=&limit=&format=ours|openai, paginated by custom_id
    GET  /v1/jobs/{id}/events        Server-Sent Events; Last-Event-ID resumes; ends after `final`
    POST /v1/jobs/{id}/cancel
    GET  /v1/tasks                   the named tasks a job may name (tasks/*.yaml)
    GET  /v1/models                  the model and the LoRA adapters over it, as OpenAI lists models
    POST /v1/plan                    a job's plan: GPU, fit, time and cost, ranked; nothing runs (plan_routes.py)
    /v1/evals/suites, /v1/evals/runs, /v1/schedules: eval suites, runs and schedules (eval_routes.py)
    GET  /                           the web page (web.py; static files in shared/server/web/)
    GET  /healthz                    the process is up
    GET  /readyz                     the store and the dispatcher answer: {"ready": bool}; the details
                                     (queue counts, RunPod's health, which check failed) with an admin key,
                                     or on a server with no credentials (local-only by design); cached
                                     READYZ_CACHE_S seconds
    GET  /metrics                    Prometheus metrics (metrics_route.py): an admin key, when credentials are
                                     required; the job and queue gauges from the store and the queue

Errors of the server (the store, the queue, RunPod, the configuration) reach the client as a generic
message and an error id; the log has the full text (shared/server/api/problems.py). Open event
streams are capped per key (SSE_MAX_STREAMS_PER_KEY, shared/server/api/streams.py).

Every route is a thin layer over `JobLifecycle` (shared/server/lifecycle.py).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from handler.logs import quiet_http_clients
from shared.contracts.errors import ConfigError, InputError, Issue, LLMJobsError, NotFound, PayloadTooLarge
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings, get_settings
from shared.contracts.tasks import Task, load_tasks
from shared.server.api.auth import MemoryRateLimit, UpstashRateLimit, rate_limiter
from shared.server.api.credentials import Authenticator, Principal, Refused
from shared.server.api.problems import answer
from shared.server.api.readiness import ReadinessProbe
from shared.server.api.schemas import JobFromFile, JobIn
from shared.server.api.streams import StreamSlots
from shared.server.dispatch import Dispatcher, make_dispatcher
from shared.server.lifecycle import JobLifecycle
from shared.server.metrics import DerivedGauges
from shared.stores import Store, open_store


class State:
    def __init__(self, settings: Settings, lifecycle: JobLifecycle, auth: Authenticator,
                 limiter: MemoryRateLimit | UpstashRateLimit | None):
        self.settings, self.lifecycle, self.auth, self.limiter = settings, lifecycle, auth, limiter
        self.limits = Limits.from_settings(settings)
        #: the named tasks (TASKS_DIR): a bad task file stops the start, naming the file and the field
        self.tasks: dict[str, Task] = load_tasks(settings.task_presets)
        self.streams = StreamSlots(settings.sse_max_streams_per_key)
        self.readiness = ReadinessProbe(lifecycle, cache_s=settings.readyz_cache_s, timeout_s=settings.http_timeout_s)
        #: /metrics' job and queue gauges, from the store and the queue (shared/server/metrics.py)
        self.metrics = DerivedGauges(lifecycle, cache_s=settings.metrics_cache_s, timeout_s=settings.http_timeout_s)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               dispatcher: Dispatcher | None = None) -> FastAPI:
    settings = settings or get_settings()
    quiet_http_clients()  # however this app is run (serve, Modal, a bare uvicorn): no request URLs in the log
    store = store or open_store(settings)
    lifecycle = JobLifecycle(store, dispatcher or make_dispatcher(settings, store), settings)
    state = State(settings, lifecycle, Authenticator(settings, store), rate_limiter(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if state.limiter is not None:
            await state.limiter.close()
        await state.lifecycle.close()

    app = _routes_only(lifespan)
    app.state.llm_jobs = state
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                           expose_headers=["Retry-After", "X-RateLimit-Remaining"])
    return app


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (openapi.json): it depends on the routes alone, no deployment."""
    return _routes_only().openapi()


def _routes_only(lifespan: Any = None) -> FastAPI:
    from shared.server.api.dropin import dropin
    from shared.server.api.eval_routes import evals, schedules
    from shared.server.api.metrics_route import metrics
    from shared.server.api.model_routes import models
    from shared.server.api.openai_routes import batches, files
    from shared.server.api.plan_routes import plan
    from shared.server.api.routes import health, jobs, tasks
    from shared.server.api.web import web

    app = FastAPI(title="llm-jobs", version="0.1.0", lifespan=lifespan,
                  description="Batch LLM jobs: submit, follow live, read results, cancel. "
                              "Every result is stored once; events stream as chunks are stored.")
    _errors(app)
    app.include_router(health)
    app.include_router(metrics)  # Prometheus metrics (shared/server/api/metrics_route.py)
    app.include_router(jobs)
    app.include_router(tasks)  # the named tasks (TASKS_DIR)
    app.include_router(models)  # the model and its LoRA adapters (shared/server/api/model_routes.py)
    app.include_router(files)  # OpenAI's Files and Batches API (shared/server/api/openai_routes.py)
    app.include_router(batches)
    app.include_router(evals)  # eval suites, runs and schedules (shared/server/api/eval_routes.py)
    app.include_router(schedules)
    app.include_router(plan)  # a job's GPU, time and cost before it runs (shared/server/api/plan_routes.py)
    app.include_router(web)  # the web page at / (shared/server/api/web.py)
    app.include_router(dropin)  # the grading service's own routes (shared/server/api/dropin.py)
    app.openapi = lambda: _openapi(app)
    return app


def create_public_app(settings: Settings, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    """`create_app` for a public deployment (Modal's web function): it refuses to run open."""
    if not settings.credentials_required:
        raise ConfigError("set API_KEYS (or SUPABASE_JWT_SECRET / SUPABASE_JWKS_URL) in the llm-jobs-config secret: "
                          "the API on Modal is public")
    return create_app(settings, dispatcher=dispatcher)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def invalid(request: Request, e: InputError) -> JSONResponse:
        return JSONResponse({"detail": [i.as_dict() for i in e.issues]}, status_code=422)

    @app.exception_handler(PayloadTooLarge)
    async def too_large(request: Request, e: PayloadTooLarge) -> JSONResponse:
        # the job is valid, but over its transport's size limit: the sentence says which, and what to do
        return JSONResponse({"detail": e.message}, status_code=413)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        # a bad query or path parameter: the same Problem shape as any 422, and the input is not echoed
        issues = [Issue(err["msg"], field=".".join(str(p) for p in err["loc"][1:])) for err in e.errors()]
        return JSONResponse({"detail": [i.as_dict() for i in issues]}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(LLMJobsError)
    async def unavailable(request: Request, e: LLMJobsError) -> JSONResponse:
        return _problem(request, e)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        # Starlette re-raises it afterwards (the server logs the traceback too); the client gets the id
        return _problem(request, e)


def _problem(request: Request, e: Exception) -> JSONResponse:
    """A generic message and an error id for the client; the full text in the log (problems.py)."""
    a = answer(e, where=f"{request.method} {request.url.path}")
    return JSONResponse(a.body, status_code=a.status, headers=a.headers)


def state_of(request: Request) -> State:
    return request.app.state.llm_jobs


async def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    state = state_of(request)
    try:
        who = await state.auth.principal(authorization)
    except Refused as e:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"' if e.status == 401 else "Bearer"}
        raise HTTPException(e.status, e.message, headers=headers) from None
    if state.limiter is not None:
        verdict = await state.limiter.check(who.who)
        if not verdict.allowed:
            raise HTTPException(429, f"over {verdict.limit} requests a minute",
                                headers={"Retry-After": str(math.ceil(verdict.reset_s))})
    return who


async def _may_see_details(request: Request) -> bool:
    """For /readyz: a token is welcome, never demanded (a probe gets yes or no). True for an admin key, and
    on a server with no credentials configured: `llm-jobs serve` refuses a public interface without them,
    so such a server is local-only by design. Public deployments (Modal) must set keys
    (`create_public_app`). Owners (their keys, Supabase users) see only yes or no."""
    # read here, not a declared parameter: never a 422
    return await state_of(request).auth.may_see_details(request.headers.get("authorization"))


#: who calls (an owner, or an admin), once authenticated and under the rate limit
Caller = Annotated[Principal, Depends(_caller)]
#: whether the caller may see /readyz's details (no 401/403, no rate limit)
MaySeeDetails = Annotated[bool, Depends(_may_see_details)]
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
    from_file = JobFromFile.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(from_file.pop("$defs", {}))
    components["JobFromFile"] = from_file
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, ops in schema["paths"].items():
        if path.startswith(("/v1/", "/evaluate", "/stream/")):  # the drop-in's routes too (dropin.py)
            for op in ops.values():
                op["security"] = [{"bearer": []}]
    _problems_for_422(schema)
    _links(schema)
    app.openapi_schema = schema
    return schema


def _problems_for_422(schema: dict[str, Any]) -> None:
    """Every 422 is a Problem (a bad query or path parameter too: see `_errors`), not FastAPI's default."""
    problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for ops in schema["paths"].values():
        for op in ops.values():
            if "422" in op.get("responses", {}):
                op["responses"]["422"] = {"description": "Validation Error", "content": problem}
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


#: what a client (and schemathesis' stateful tests) can do next with the id a submission answered
_NEXT = {"GetJob": "get_job_v1_jobs__job_id__get", "GetResults": "results_v1_jobs__job_id__results_get",
         "FollowEvents": "events_v1_jobs__job_id__events_get", "CancelJob": "cancel_v1_jobs__job_id__cancel_post"}


def _links(schema: dict[str, Any]) -> None:
    """OpenAPI links from `POST /v1/jobs` to the routes that take its `id`."""
    links = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}} for name, op in _NEXT.items()}
    for status in ("200", "202"):
        schema["paths"]["/v1/jobs"]["post"]["responses"][status]["links"] = links
