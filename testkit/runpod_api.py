"""RunPod's worker-facing control plane, small and faithful, for running `runpod_worker.py` for real.

A RunPod worker (the runpod SDK's JobScaler) talks to four URLs it reads from its environment:
- GET  RUNPOD_WEBHOOK_GET_JOB    (`/job-take/$ID?...`; `/job-take-batch/...&batch_size=N` for N > 1)
                                 -> a job `{"id", "input"}` (or a list), or 204 when there is none
- GET  the stop channel          (`/job-stop/...`, derived from the job-take URL) -> `{"jobsToStop": [...]}`
                                 or 204; a long poll
- POST RUNPOD_WEBHOOK_POST_STREAM (`$ID` replaced) one streamed output `{"output": ...}` per yield
- POST RUNPOD_WEBHOOK_POST_OUTPUT the job's end: `{"output": [...]}` or `{"error": "..."}`
Bodies are JSON sent as form-encoded text, as the SDK sends them. This records everything, so a
test can see what RunPod would have seen.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from testkit.serve import ThreadedServer


@dataclass
class Seen:
    takes: list[float] = field(default_factory=list)  # when the worker asked for work
    streamed: dict[str, list[Any]] = field(default_factory=dict)  # job id -> outputs in order
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> final body


class FakeRunpod:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[dict[str, Any]] = []
        self._stop: set[str] = set()
        self.seen = Seen()
        app = Starlette(routes=[
            Route("/job-take/{worker}", self.take, methods=["GET"]),
            Route("/job-take-batch/{worker}", self.take, methods=["GET"]),
            Route("/job-stop/{worker}", self.stop_channel, methods=["GET"]),
            Route("/job-stream/{worker}/{job_id}", self.stream, methods=["POST"]),
            Route("/job-done/{worker}/{job_id}", self.done, methods=["POST"]),
        ])
        self._server = ThreadedServer(app)
        self.url = self._server.url

    def env(self, worker_id: str = "test-worker") -> dict[str, str]:
        q = "?gpu=cpu-test"
        return {
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID{q}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID/$ID{q}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.url}/job-stream/$RUNPOD_POD_ID/$ID{q}",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    # ## What a test does

    def submit(self, job_id: str, job_input: Any) -> None:
        with self._lock:
            self._queue.append({"id": job_id, "input": job_input})

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._stop.add(job_id)

    def wait(self, predicate, timeout: float = 300, proc=None) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the worker exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting on the RunPod worker")
            time.sleep(0.1)

    # ## What the worker calls

    async def take(self, request: Request) -> Response:
        batch = int(request.query_params.get("batch_size", "1"))
        with self._lock:
            self.seen.takes.append(time.time())
            jobs, self._queue = self._queue[:batch], self._queue[batch:]
        if not jobs:
            await asyncio.sleep(0.2)  # a short long-poll, as the real one holds the request
            return Response(status_code=204)
        body = jobs if request.url.path.startswith("/job-take-batch/") else jobs[0]
        return JSONResponse(body)

    async def stop_channel(self, request: Request) -> Response:
        for _ in range(5):
            with self._lock:
                ids, self._stop = sorted(self._stop), set()
            if ids:
                return JSONResponse({"jobsToStop": ids})
            await asyncio.sleep(0.1)
        return Response(status_code=204)

    async def stream(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self._lock:
            self.seen.streamed.setdefault(request.path_params["job_id"], []).append(body["output"])
        return Response("ok")

    async def done(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self._lock:
            self.seen.done[request.path_params["job_id"]] = body
        return Response("ok")

    def start(self) -> FakeRunpod:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
