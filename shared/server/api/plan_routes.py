"""`POST /v1/plan`: which GPU and platform a job should run on, how long it takes and what it costs, before it is
submitted (README, "Planning a job"). The body is what `POST /v1/jobs` takes; nothing is stored or run. The work
is shared/server/planner.py's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from shared.contracts.models import ID_PATTERN
from shared.planning.options import Quantization
from shared.planning.plan import Plan, Platform
from shared.server.api.app import AppState, Caller
from shared.server.api.intake import FileJob, intake_of
from shared.server.api.routes import ERRORS, read_body
from shared.server.api.schemas import Problem
from shared.server.planner import Planner

plan = APIRouter(prefix="/v1/plan", tags=["plan"])

_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/JobIn"},
                                              {"$ref": "#/components/schemas/JobFromFile"}]}},
    "application/jsonl": {"schema": {"type": "string"}}}}}


@plan.post("", response_model=Plan, responses={413: {"model": Problem}, 422: {"model": Problem},
                                               500: {"model": Problem}, **ERRORS}, openapi_extra=_BODY)
async def plan_job(request: Request, state: AppState, who: Caller,
                   gpus: Annotated[str | None, Query(description="GPUs to compare, by comma (L40S,A100-80GB,H100 "
                                                     "when left out)", max_length=200)] = None,
                   platform: Annotated[Platform | None, Query(description="one platform (both when left out)")]
                   = None,
                   workers: Annotated[int, Query(ge=1, le=1000, description="workers the job is split over")] = 1,
                   quantization: Annotated[Quantization | None, Query(description="the weights' quantization "
                                                                      "(QUANTIZATION when left out)")] = None,
                   task: Annotated[str | None, Query(description="a named task (GET /v1/tasks) for a JSONL body",
                                                     pattern=ID_PATTERN)] = None) -> Plan:
    """The job's plan: its prompt tokens counted with the served model's tokenizer and chat template, whether it
    fits each GPU (and with what tensor parallelism), and its time and cost on each platform, ranked by cost,
    then time, with a recommendation, alternatives and the assumptions made. Bad items are left out of the count
    (a submit would make them error results)."""
    raw = await read_body(request, state.settings.max_body_bytes)
    intake = intake_of(request.app.state, state.settings, state.limits, state.tasks)
    job = await intake.parse(raw, request.headers.get("content-type", "application/json"), job_id=None,
                             strict=False, task=task)
    work: Any = (job.options, job.file_id) if isinstance(job, FileJob) else job
    names = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    return await planner_of(request.app.state, state).plan(work, gpus=names, platform=platform, workers=workers,
                                                            quantization=quantization, owner=who.owner,
                                                            run=intake.run)


def planner_of(app_state: Any, state: Any) -> Planner:
    """The app's Planner, made on first use (it loads the model's tokenizer once)."""
    planner = getattr(app_state, "llm_jobs_planner", None)
    if planner is None:
        planner = app_state.llm_jobs_planner = Planner(state.settings, state.lifecycle.store, state.limits)
    return planner
