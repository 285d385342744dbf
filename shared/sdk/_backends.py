"""The SDK's backends: where a job goes and how its events come back.

    http    our API (`llm-jobs serve`): SSE events resumed with Last-Event-ID after a drop
    runpod  a RunPod endpoint (or `llm-jobs serve-runpod`): /run, /stream, /status, /cancel
    modal   the deployed Modal app: `LLMJobs.run.spawn`; the final event when the call ends
    local   an engine in this process, through the job lifecycle (shared/server/lifecycle.py)

Every backend takes a validated Job (the wire format) and yields events as models
(shared/contracts/events.py), each validated on arrival: `chunk`, `progress`, `error`, then
exactly one `final`. A `gap` (http, local) says the server's capped stream dropped events this
reader had not seen; it is passed on, and the events after it follow (the results are stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from shared.contracts.errors import ApiError, AuthError, ConfigError, InputError, Issue, NotFound, RateLimited
from shared.contracts.events import ChunkEvent, Event, FinalEvent, Outcome, parse_event
from shared.contracts.models import Job, JobStatus, Result, Summary
from shared.contracts.retry import RETRYABLE_STATUS, transient, with_retries
from shared.contracts.settings import DEFAULTS, Settings
from shared.queue.runpod import FINAL_STATES, STATUSES, RunpodClient
from shared.stores import open_store

Received = tuple[str, Event]  # (event id, event)


class Backend(Protocol):
    async def submit(self, job: Job) -> dict[str, Any]:
        """Start the job; answers at least {"id", "status"}."""

    async def get(self, job_id: str) -> dict[str, Any]: ...

    async def list(self, *, status: str | None, limit: int, after: str | None) -> dict[str, Any]:
        """A page of the caller's jobs, newest first: `{"data": [job, ...], "next_after": id | None}`."""

    def events(self, job_id: str, after: str | None) -> AsyncIterator[Received]:
        """Events after `after` until `final`."""

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        """One page (ordered by custom_id) and the cursor for the next, None on the last."""

    async def cancel(self, job_id: str) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


# ## http: our API


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        detail = r.json().get("detail")
    except ValueError:
        detail = r.text[:300]
    if r.status_code == 422 and isinstance(detail, list):
        raise InputError([Issue(d.get("message", ""), field=d.get("field", ""), index=d.get("index"),
                                line=d.get("line")) for d in detail])
    cls = {401: AuthError, 403: AuthError, 404: NotFound, 429: RateLimited}.get(r.status_code, ApiError)
    if cls is ApiError and r.status_code in RETRYABLE_STATUS:
        r.raise_for_status()  # retried by the caller
    raise cls(f"{r.request.method} {r.request.url.path}: HTTP {r.status_code}: {detail}", status=r.status_code)


class HttpBackend:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = DEFAULTS.http_timeout_s,
                 attempts: int = 5,
                 transport: httpx.AsyncBaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                       transport=transport)
        self.attempts = attempts

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        async def once() -> Any:
            r = await self._http.request(method, path, **kw)
            if r.status_code == 429:
                r.raise_for_status()
            _raise_for(r)
            return r.json() if r.content else {}

        try:
            return await with_retries(once, attempts=self.attempts, retryable=transient)
        except httpx.HTTPStatusError as e:
            code = e.response.status_code
            raise (RateLimited if code == 429 else ApiError)(f"{method} {path}: HTTP {code}", status=code) from e
        except httpx.TransportError as e:
            raise ApiError(f"{method} {path}: {type(e).__name__}: {e}") from e

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        """One API call, retried on a transient failure; its JSON answer ({} for none). Errors as for jobs:
        InputError (422, naming each field), NotFound, AuthError, RateLimited, ApiError."""
        return await self._call(method, path, **kw)

    async def submit(self, job: Job) -> dict[str, Any]:
        return await self._call("POST", "/v1/jobs", json=job.wire())

    async def upload(self, path: Path) -> dict[str, Any]:
        """POST /v1/files: the file streams from disk in 64 KiB parts (httpx's multipart encoder), never
        read whole. The server validates it line by line; it answers OpenAI's file object."""
        async def once() -> Any:
            with path.open("rb") as f:  # opened again on a retry: the upload starts over
                r = await self._http.post("/v1/files", data={"purpose": "batch"},
                                          files={"file": (path.name, f, "application/jsonl")})
            _raise_for(r)
            return r.json()

        try:
            return await with_retries(once, attempts=self.attempts, retryable=transient)
        except httpx.HTTPStatusError as e:
            raise ApiError(f"POST /v1/files: HTTP {e.response.status_code}", status=e.response.status_code) from e
        except httpx.TransportError as e:
            raise ApiError(f"POST /v1/files: {type(e).__name__}: {e}") from e

    async def submit_file(self, path: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Upload a JSONL file, then start a job over its lines (`input_file_id`): nothing holds it whole."""
        uploaded = await self.upload(path)
        return await self._call("POST", "/v1/jobs", json={**options, "input_file_id": uploaded["id"]})

    async def get(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def list(self, *, status: str | None, limit: int, after: str | None) -> dict[str, Any]:
        params = {k: v for k, v in {"status": status, "limit": limit, "after": after}.items() if v is not None}
        return await self._call("GET", "/v1/jobs", params=params)

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Received]:
        drops = 0
        while True:
            headers = {"Last-Event-ID": after} if after else {}
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        _raise_for(r)
                    async for event_id, event in _sse(r.aiter_lines()):
                        after, drops = event_id or after, 0
                        yield event_id, event
                        if isinstance(event, FinalEvent):
                            return
            except (httpx.TransportError, httpx.HTTPStatusError) as e:
                drops += 1
                if drops >= self.attempts:
                    raise ApiError(f"the event stream of {job_id} kept dropping: {e}") from e
            await asyncio.sleep(min(0.5 * 2 ** drops, 8))  # the stream ended without `final`: reconnect

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        params = {"limit": limit, **({"after": after} if after else {})}
        page = await self._call("GET", f"/v1/jobs/{job_id}/results", params=params)
        return [Result.model_validate(r) for r in page["data"]], page["next_after"]

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/jobs/{job_id}/cancel")

    async def aclose(self) -> None:
        await self._http.aclose()


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[Received]:
    """(id, event) per Server-Sent Event, validated; comments (pings) are skipped."""
    event_id, data = "", []
    async for line in lines:
        if not line:
            if data:
                yield event_id, _event("\n".join(data))
            event_id, data = "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


def _event(data: Any) -> Event:
    try:
        return parse_event(data)
    except ValidationError as e:
        raise ApiError(f"the backend sent something that is not an llm-jobs event: {e}") from e


# ## runpod: a RunPod endpoint


#: how a RunPod job that ended without our final event (a stop, a crash, a timeout) ended
_OUTCOMES = {"COMPLETED": Outcome.completed, "CANCELLED": Outcome.cancelled}


class RunpodBackend:
    """Jobs by RunPod request id. Results come from the chunk events (and the aggregate output)."""

    def __init__(self, client: RunpodClient, *, poll_s: float = 1.0):
        self.client = client
        self.poll_s = poll_s
        self._runs: dict[str, str] = {}  # our job id -> RunPod request id
        self._totals: dict[str, int] = {}
        self._results: dict[str, dict[str, Result]] = {}

    def _run_id(self, job_id: str) -> str:
        return self._runs.get(job_id, job_id)

    async def list(self, *, status: str | None, limit: int, after: str | None) -> dict[str, Any]:
        raise ConfigError("the runpod backend cannot list jobs (RunPod keeps no list of an endpoint's requests): "
                          "list them from the store, with the http, local or modal backend")

    async def submit(self, job: Job) -> dict[str, Any]:
        answer = await self.client.run(job.wire())
        self._runs[job.id], self._totals[job.id] = answer["id"], job.total
        status = STATUSES.get(answer.get("status", ""), JobStatus.queued)
        return {"id": job.id, "status": status.value, "run_id": answer["id"]}

    async def get(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.status(self._run_id(job_id))
        status = STATUSES.get(answer["status"])
        out = {"id": job_id, "status": status.value if status else answer["status"].lower(),
               "run_id": answer.get("id"), "error": answer.get("error")}
        for output in answer.get("output") or []:
            self._keep(job_id, output)
        return out

    def _keep(self, job_id: str, output: Any) -> Event | None:
        """Our event, if this RunPod output is one (the handler also yields `{"error": ...}`)."""
        try:
            event = parse_event(output)
        except ValidationError:
            return None
        if isinstance(event, ChunkEvent):
            for r in event.results:
                self._results.setdefault(job_id, {})[r.custom_id] = r
        return event

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Received]:
        n = int(after) if after and after.isdigit() else 0
        while True:
            answer = await self.client.stream(self._run_id(job_id))
            for item in answer.get("stream", []):
                event = self._keep(job_id, item.get("output"))
                if event is None:
                    continue
                n += 1
                yield str(n), event
                if isinstance(event, FinalEvent):
                    return
            state = answer.get("status")
            if state in FINAL_STATES and not answer.get("stream"):
                yield "final", await self._final(job_id, state)
                return
            if not answer.get("stream"):
                await asyncio.sleep(self.poll_s)

    async def _final(self, job_id: str, state: str) -> FinalEvent:
        """The final event of a RunPod job whose stream is drained: ours from its aggregate output
        (another reader took it from /stream), else one made from RunPod's state (a stop, a cancel, a
        timeout, a failure before it ran)."""
        answer = await self.client.status(self._run_id(job_id))
        for output in reversed(answer.get("output") or []):
            event = self._keep(job_id, output)
            if isinstance(event, FinalEvent):
                return event
        summary = Summary.empty(self._totals.get(job_id, 0), answer.get("error") or f"RunPod says {state}")
        return FinalEvent(job_id=job_id, outcome=_OUTCOMES.get(state, Outcome.failed), summary=summary)

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        if job_id not in self._results:
            await self.get(job_id)
        ordered = sorted(self._results.get(job_id, {}).values(), key=lambda r: r.custom_id)
        page = [r for r in ordered if after is None or r.custom_id > after][:limit]
        return page, page[-1].custom_id if len(page) == limit else None

    async def cancel(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.cancel(self._run_id(job_id))
        return {"id": job_id, "status": STATUSES.get(answer.get("status", ""), JobStatus.cancelled).value}

    async def aclose(self) -> None:
        await self.client.aclose()


# ## local and modal: results in the store Settings configure


class _Stored:
    """Status and results from the store Settings configure, through the job lifecycle."""

    lifecycle: Any  # shared.server.lifecycle.JobLifecycle, imported when a backend is made

    async def get(self, job_id: str) -> dict[str, Any]:
        return (await self.lifecycle.get(job_id)).model_dump(mode="json")

    async def list(self, *, status: str | None, limit: int, after: str | None) -> dict[str, Any]:
        page = await self.lifecycle.list(limit=limit, status=JobStatus(status) if status else None, after=after)
        return {"data": [r.model_dump(mode="json") for r in page],
                "next_after": page[-1].id if len(page) == limit else None}

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        return await self.lifecycle.results(job_id, after=after, limit=limit)

    async def aclose(self) -> None:
        await self.lifecycle.close()


def _lifecycle(settings: Settings, store: Any, dispatcher: Any) -> Any:
    from shared.server.lifecycle import JobLifecycle  # the server side: only when such a backend is used

    return JobLifecycle(store or open_store(settings), dispatcher, settings)


class LocalBackend(_Stored):
    """The engine boots on the first job; jobs go through the same lifecycle as the API's."""

    def __init__(self, settings: Settings, *, store: Any = None, service: Any = None):
        from shared.server.dispatch import LocalDispatcher

        store = store or open_store(settings)
        self.lifecycle = _lifecycle(settings.model_copy(update={"sse_poll_s": 0.1}), store,
                                    LocalDispatcher(settings, store, service=service))

    async def submit(self, job: Job) -> dict[str, Any]:
        accepted = await self.lifecycle.submit(job)
        return {"id": job.id, "status": accepted.status.value, "total": job.total, "created": accepted.created}

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Received]:
        async for ev in self.lifecycle.follow(job_id, after):
            yield ev.id, ev.event

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return (await self.lifecycle.cancel(job_id)).record.model_dump(mode="json")


class ModalBackend(_Stored):
    """The deployed Modal app. Default: `LLMJobs.run.spawn` (durable; retried if a container dies),
    and the stream is the final event. With `live=True`: `LLMJobs.stream.remote_gen`, every chunk
    as it is stored; the job runs while the stream is read (closing it stops the job, and a
    re-submit with the same id resumes). Results are read from the store Settings configure."""

    def __init__(self, settings: Settings, *, live: bool = False, cls: Any = None, store: Any = None,
                 train: Any = None):
        """`train`: the training function (modal_app.py `train`), which training jobs are spawned on."""
        if cls is None or train is None:
            import modal

            cls = cls or modal.Cls.from_name(settings.modal_app_name, settings.modal_class_name)
            train = train or modal.Function.from_name(settings.modal_app_name, settings.modal_train_function)
        self._cls, self._train = cls, train
        self.live = live
        self.lifecycle = _lifecycle(settings, store, None)  # reads only: jobs are spawned on Modal
        self._calls: dict[str, Any] = {}  # job id -> FunctionCall (spawned)
        self._jobs: dict[str, Job] = {}  # job id -> job (live, not started yet)

    async def submit(self, job: Job) -> dict[str, Any]:
        if job.training is not None:  # on the training function's GPU; its outcome is its final event
            call = await self._train.spawn.aio(job.wire())
            self._calls[job.id] = call
            return {"id": job.id, "status": "queued", "call_id": call.object_id}
        if self.live:
            self._jobs[job.id] = job
            return {"id": job.id, "status": "queued"}
        call = await self._cls().run.spawn.aio(job.wire())
        self._calls[job.id] = call
        return {"id": job.id, "status": "queued", "call_id": call.object_id}

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Received]:
        if job_id in self._jobs:
            n = 0
            async for data in self._cls().stream.remote_gen.aio(self._jobs[job_id].wire()):
                n += 1
                yield str(n), _event(data)
            self._jobs.pop(job_id, None)
            return
        call = self._calls.get(job_id)
        if call is not None:
            try:
                yield "final", _event(await call.get.aio())
                return
            except Exception:  # failed after its retries, or cancelled: the store has the outcome
                pass
        async for ev in self.lifecycle.follow(job_id):  # a job this client did not spawn, or one that raised
            if isinstance(ev.event, FinalEvent):
                yield ev.id, ev.event

    async def cancel(self, job_id: str) -> dict[str, Any]:
        if job_id in self._calls:
            await self._calls[job_id].cancel.aio()
        self._jobs.pop(job_id, None)
        return {"id": job_id, "status": "cancelled"}
