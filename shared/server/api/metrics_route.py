"""`GET /metrics`: Prometheus' text exposition of this process's default registry (README, "Metrics").

What it holds: the job and queue gauges, set from the store and the queue just before the answer
(shared/server/metrics.py, cached METRICS_CACHE_S seconds), the counters and histograms this process observed
(its SSE streams' chunk-to-SSE latency; with DISPATCHER=local also its runner's items, tokens and latencies), and
vLLM's own `vllm:*` metrics where the engine runs in this process (`llm-jobs serve` with the local dispatcher).

Who may read it: the figures are every owner's together, so they are an operator's. When the API requires
credentials, only an admin key (API_KEYS) reads them: no token is a 401, an owner's key or token a 403. A server
with no credentials configured is local-only by design (`llm-jobs serve` refuses a public interface then), and
answers anyone, as /readyz shows it its details.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.server.api.app import AppState, Caller
from shared.server.api.routes import ERRORS
from shared.server.api.schemas import Problem

metrics = APIRouter(tags=["health"])

_EXPOSITION = {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}


@metrics.get("/metrics", response_class=Response, openapi_extra={"security": [{"bearer": []}]}, responses={
    200: {"content": _EXPOSITION, "description": "Prometheus' text exposition format"},
    **ERRORS, 403: {"model": Problem, "description": "not an admin key: the figures are every owner's"}})
async def scrape(state: AppState, who: Caller) -> Response:
    """Prometheus metrics: jobs by state and the queue's depth (from the store and the queue), items, tokens and
    latencies this process observed, and vLLM's `vllm:*` where the engine runs here. An admin key only, when
    the API requires credentials."""
    if not who.admin:
        raise HTTPException(403, "metrics are every owner's figures: send an admin key (API_KEYS)")
    await state.metrics.refresh()  # never raises: a store or queue that does not answer leaves its gauges
    text = await asyncio.to_thread(generate_latest, REGISTRY)  # vLLM's series are many: off the loop
    return Response(text, media_type=CONTENT_TYPE_LATEST)
