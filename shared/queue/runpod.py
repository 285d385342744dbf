"""RunPod's serverless endpoint API over httpx: /run, /status, /stream, /cancel, /health.

Used by the API's RunPod dispatcher and the SDK's `runpod` backend. It works the same against
api.runpod.ai and against `llm-jobs serve-runpod` (only the base URL changes). Every call has a
timeout; 429, 502-504 and connection errors (`transient`) are retried with bounded backoff; the API
key is sent as a bearer token and never logged. Job states are RunPod's: IN_QUEUE, IN_PROGRESS,
COMPLETED, FAILED, CANCELLED, TIMED_OUT (the official SDK forgets CANCELLED in places; here every
one of them ends a wait).
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.contracts.errors import LLMJobsError
from shared.contracts.models import JobStatus
from shared.contracts.retry import with_retries
from shared.contracts.settings import DEFAULTS

#: RunPod's job states, as the statuses of our jobs
STATUSES: dict[str, JobStatus] = {"IN_QUEUE": JobStatus.queued, "IN_PROGRESS": JobStatus.running,
                                  "COMPLETED": JobStatus.completed, "FAILED": JobStatus.failed,
                                  "CANCELLED": JobStatus.cancelled, "TIMED_OUT": JobStatus.failed}
#: the states a RunPod job never leaves
FINAL_STATES = frozenset(state for state, status in STATUSES.items() if status.terminal)


class RunpodError(LLMJobsError):
    """RunPod refused a call, or stayed unreachable through the retries."""


class RunpodClient:
    def __init__(self, endpoint_id: str, api_key: str | None = None, *,
                 base_url: str = DEFAULTS.runpod_base_url, timeout_s: float = DEFAULTS.http_timeout_s,
                 attempts: int = 4,
                 transport: httpx.AsyncBaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=f"{base_url.rstrip('/')}/{endpoint_id}", headers=headers,
                                       timeout=timeout_s, transport=transport)
        self.attempts = attempts

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            r = await self._http.request(method, path, **kw)
            r.raise_for_status()
            return r.json()

        try:
            return await with_retries(once, attempts=self.attempts)
        except httpx.HTTPStatusError as e:
            raise RunpodError(f"runpod {method} {path}: HTTP {e.response.status_code}: {e.response.text[:300]}") from e
        except httpx.HTTPError as e:
            raise RunpodError(f"runpod {method} {path}: {type(e).__name__}: {e}") from e

    async def run(self, job_input: Any) -> dict[str, Any]:
        return await self._call("POST", "/run", json={"input": job_input})

    async def status(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/status/{run_id}")

    async def stream(self, run_id: str) -> dict[str, Any]:
        """The outputs produced since the last call (RunPod hands each out once)."""
        return await self._call("GET", f"/stream/{run_id}")

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/cancel/{run_id}")

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def aclose(self) -> None:
        await self._http.aclose()
