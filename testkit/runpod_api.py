"""RunPod's control plane, small and faithful: the worker-facing side, for running `runpod_worker.py`
for real, and the endpoint's client-facing API (`/run`, `/status`, `/cancel`, `/health`).

A RunPod worker (the runpod SDK's JobScaler) talks to four URLs it reads from its environment:
- GET  RUNPOD_WEBHOOK_GET_JOB    (`/job-take/$ID?...`; `/job-take-batch/...&batch_size=N` for N > 1)
                                 -> a job `{"id", "input"}` (or a list), or 204 when there is none
- GET  the stop channel          (`/job-stop/...`, derived from the job-take URL) -> `{"jobsToStop": [...]}`
                                 or 204; a long poll
- POST RUNPOD_WEBHOOK_POST_STREAM (`$ID` replaced) one streamed output `{"output": ...}` per yield
- POST RUNPOD_WEBHOOK_POST_OUTPUT the job's end: `{"output": [...]}` or `{"error": "..."}`
Bodies are JSON sent as form-encoded text, as the SDK sends them. This records everything, so a
test can see what RunPod would have seen.

It also answers the client-facing side of an endpoint, under `/v2/{endpoint_id}` (the base URL of
`RunpodClient`), feeding the same queue the worker takes from:
- POST /run           `{"input": ...}` -> `{"id", "status": "IN_QUEUE"}`; the job exists from the
                      moment the request is read, whenever (or whether) the answer comes back:
                      `delay_runs` holds the answer, `refuse_runs` answers 429 (rate limited, no job)
- POST /runsync       the same, then waits (up to `runsync_wait_s`) for the job to end:
                      `{"id", "status"}` plus `output` (or `error`) once it has
                      Both refuse a body over RunPod's payload limit (`RUN_MAX_BYTES`, 10 MiB for /run;
                      `RUNSYNC_MAX_BYTES`, 20 MiB for /runsync) with 413 `{"error": ...}`, and no job is
                      made. The limits are RunPod's documented ones ("Endpoint operations": /run "Payload
                      Limit: 10 MB", /runsync "Payload Limit: 20 MB",
                      https://docs.runpod.io/serverless/references/operations), read as MiB. RunPod does not
                      document how it answers a body over them; 413 with a message naming both sizes is this
                      double's choice.
- GET  /status/{id}   `{"id", "status"}`;  POST /cancel/{id}  `{"id", "status": "CANCELLED"}`
                      (a queued job leaves the queue; a running one is put on the stop channel)
- GET  /health        `{"jobs": {...}, "workers": {...}}`
RunPod offers nothing else on this side: no way to list requests, or to find one by its input.
"""

from __future__ import annotations

import asyncio
import itertools
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

#: RunPod's payload limit on a /run body (asynchronous jobs)
RUN_MAX_BYTES = 10 * 1024 * 1024
#: RunPod's payload limit on a /runsync body (synchronous jobs)
RUNSYNC_MAX_BYTES = 20 * 1024 * 1024


def payload_too_large(operation: str, size: int, limit: int) -> dict[str, str]:
    """This double's answer (with 413) to a body over an operation's payload limit."""
    return {"error": f"payload too large: the /{operation} request body is {size} bytes, over the /{operation} "
                     f"payload limit of {limit} bytes"}


@dataclass
class Seen:
    takes: list[float] = field(default_factory=list)  # when the worker asked for work
    streamed: dict[str, list[Any]] = field(default_factory=dict)  # job id -> outputs in order
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> final body
    runs: list[tuple[str, Any]] = field(default_factory=list)  # (request id, input) of each job /run made
    cancels: list[str] = field(default_factory=list)  # request ids POSTed to /cancel


class FakeRunpod:
    def __init__(self, api_key: str | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: list[dict[str, Any]] = []
        self._stop: set[str] = set()
        self._states: dict[str, str] = {}  # request id -> RunPod job state
        self._ids = itertools.count(1)
        self.api_key = api_key  # when set, the client-facing routes want `Authorization: Bearer <key>`
        #: seconds to hold the answer of each of the next /run calls (the job is queued at once)
        self.delay_runs: list[float] = []
        #: how many of the next /run calls are answered 429 (nothing is queued)
        self.refuse_runs = 0
        #: the longest /runsync waits for its job to end before it answers with the job's state
        self.runsync_wait_s = 30.0
        self.seen = Seen()
        api = "/v2/{endpoint}"
        app = Starlette(routes=[
            Route("/job-take/{worker}", self.take, methods=["GET"]),
            Route("/job-take-batch/{worker}", self.take, methods=["GET"]),
            Route("/job-stop/{worker}", self.stop_channel, methods=["GET"]),
            Route("/job-stream/{worker}/{job_id}", self.stream, methods=["POST"]),
            Route("/job-done/{worker}/{job_id}", self.done, methods=["POST"]),
            Route(f"{api}/run", self.run, methods=["POST"]),
            Route(f"{api}/runsync", self.runsync, methods=["POST"]),
            Route(f"{api}/status/{{job_id}}", self.status, methods=["GET", "POST"]),
            Route(f"{api}/cancel/{{job_id}}", self.cancel_request, methods=["POST"]),
            Route(f"{api}/health", self.health, methods=["GET"]),
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
            self._states[job_id] = "IN_QUEUE"

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._stop.add(job_id)

    def state(self, job_id: str) -> str | None:
        with self._lock:
            return self._states.get(job_id)

    # ## What a client calls (the endpoint's API)

    def _refused(self, request: Request) -> Response | None:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return None

    async def _body(self, request: Request, operation: str, limit: int) -> dict[str, Any] | Response:
        """The request's JSON body, or the answer RunPod gives instead (401, 413)."""
        if (refused := self._refused(request)) is not None:
            return refused
        raw = await request.body()
        if len(raw) > limit:
            return JSONResponse(payload_too_large(operation, len(raw), limit), status_code=413)
        return json.loads(raw)

    def _enqueue(self, job_id: str, job_input: Any) -> None:
        """Queue a job for the worker (call with the lock held)."""
        self._queue.append({"id": job_id, "input": job_input})
        self._states[job_id] = "IN_QUEUE"
        self.seen.runs.append((job_id, job_input))

    async def run(self, request: Request) -> Response:
        body = await self._body(request, "run", RUN_MAX_BYTES)
        if isinstance(body, Response):
            return body
        with self._lock:
            if self.refuse_runs > 0:
                self.refuse_runs -= 1
                return JSONResponse({"error": "Too Many Requests"}, status_code=429)
            job_id = f"rp-{next(self._ids)}"
            self._enqueue(job_id, body["input"])
            delay = self.delay_runs.pop(0) if self.delay_runs else 0.0
        if delay:
            await asyncio.sleep(delay)  # the job is queued; only the answer is late
        return JSONResponse({"id": job_id, "status": "IN_QUEUE"})

    async def runsync(self, request: Request) -> Response:
        body = await self._body(request, "runsync", RUNSYNC_MAX_BYTES)
        if isinstance(body, Response):
            return body
        with self._lock:
            job_id = f"sync-{next(self._ids)}"
            self._enqueue(job_id, body["input"])
        for _ in range(max(1, int(self.runsync_wait_s / 0.05))):  # polls the state the worker's calls move
            if self.state(job_id) not in ("IN_QUEUE", "IN_PROGRESS"):
                break
            await asyncio.sleep(0.05)
        with self._lock:
            answer: dict[str, Any] = {"id": job_id, "status": self._states[job_id]}
            done = self.seen.done.get(job_id, {})
        answer.update({k: done[k] for k in ("output", "error") if k in done})
        return JSONResponse(answer)

    async def status(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        job_id = request.path_params["job_id"]
        state = self.state(job_id)
        if state is None:
            return JSONResponse({"error": "request does not exist"}, status_code=404)
        return JSONResponse({"id": job_id, "status": state})

    async def cancel_request(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        job_id = request.path_params["job_id"]
        with self._lock:
            self.seen.cancels.append(job_id)
            state = self._states.get(job_id)
            if state is None:
                return JSONResponse({"error": "request does not exist"}, status_code=404)
            if state == "IN_QUEUE":
                self._queue = [j for j in self._queue if j["id"] != job_id]
            elif state == "IN_PROGRESS":
                self._stop.add(job_id)
            if state in ("IN_QUEUE", "IN_PROGRESS"):
                self._states[job_id] = state = "CANCELLED"
        return JSONResponse({"id": job_id, "status": state})

    async def health(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        with self._lock:
            states = list(self._states.values())
        count = {s: states.count(s) for s in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED")}
        return JSONResponse({"jobs": {"inQueue": count["IN_QUEUE"], "inProgress": count["IN_PROGRESS"],
                                      "completed": count["COMPLETED"], "failed": count["FAILED"],
                                      "cancelled": count["CANCELLED"]},
                             "workers": {"idle": 0, "running": 0}})

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
            for job in jobs:
                self._states[job["id"]] = "IN_PROGRESS"
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
        job_id = request.path_params["job_id"]
        with self._lock:
            self.seen.done[job_id] = body
            if self._states.get(job_id) != "CANCELLED":
                self._states[job_id] = "FAILED" if "error" in body else "COMPLETED"
        return Response("ok")

    def start(self) -> FakeRunpod:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
