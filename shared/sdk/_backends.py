"""The SDK's backends: where a job goes and how its events come back.

    http    our API (`llm-jobs serve`): SSE events resumed with Last-Event-ID after a drop
    runpod  a RunPod endpoint (or `llm-jobs serve-runpod`): /run, /stream, /status, /cancel
    modal   the deployed Modal app: `LLMJobs.run.spawn`; the final event when the call ends
    local   an engine in this process, results in the configured store

Each backend speaks events as dicts: `chunk` (results and progress), `progress`, `final`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from shared.api.dispatch import LocalDispatcher
from shared.api.events import follow
from shared.errors import ApiError, AuthError, InputError, Issue, NotFound, RateLimited
from shared.inputs import parse_job_document
from shared.models import Result
from shared.retry import with_retries
from shared.runpod_client import FINAL_STATES, RunpodClient
from shared.settings import Settings
from shared.stores import open_store

Event = tuple[str, dict[str, Any]]  # (event id, event)


class Backend(Protocol):
    async def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Start the job; answers at least {"id", "status"}."""

    async def get(self, job_id: str) -> dict[str, Any]: ...

    def events(self, job_id: str, after: str | None) -> AsyncIterator[Event]:
        """Events after `after` until `final`."""

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        """One page (ordered by custom_id) and the cursor for the next, None on the last."""

    async def cancel(self, job_id: str) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


# ## http: our API


def _retryable(e: BaseException) -> bool:
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code in (429, 502, 503, 504)
    return isinstance(e, httpx.TransportError)


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
    if cls is ApiError and r.status_code in (429, 502, 503, 504):
        r.raise_for_status()  # retried by the caller
    raise cls(f"{r.request.method} {r.request.url.path}: HTTP {r.status_code}: {detail}", status=r.status_code)


class HttpBackend:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 30, attempts: int = 5,
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
            return r.json()

        try:
            return await with_retries(once, attempts=self.attempts, retryable=_retryable)
        except httpx.HTTPStatusError as e:
            code = e.response.status_code
            raise (RateLimited if code == 429 else ApiError)(f"{method} {path}: HTTP {code}", status=code) from e
        except httpx.TransportError as e:
            raise ApiError(f"{method} {path}: {type(e).__name__}: {e}") from e

    async def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/v1/jobs", json=doc)

    async def get(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Event]:
        drops = 0
        while True:
            headers = {"Last-Event-ID": after} if after else {}
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        _raise_for(r)
                    async for event_id, data in _sse(r.aiter_lines()):
                        after, drops = event_id or after, 0
                        yield event_id, data
                        if data.get("type") == "final":
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


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """(id, data) per Server-Sent Event; comments (pings) are skipped."""
    event_id, data = "", []
    async for line in lines:
        if not line:
            if data:
                yield event_id, json.loads("\n".join(data))
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


# ## runpod: a RunPod endpoint


STATUS = {"IN_QUEUE": "queued", "IN_PROGRESS": "running", "COMPLETED": "completed", "FAILED": "failed",
          "CANCELLED": "cancelled", "TIMED_OUT": "failed"}


class RunpodBackend:
    """Jobs by RunPod request id. Results come from the chunk events (and the aggregate output)."""

    def __init__(self, client: RunpodClient, *, poll_s: float = 1.0):
        self.client = client
        self.poll_s = poll_s
        self._runs: dict[str, str] = {}  # our job id -> RunPod request id
        self._results: dict[str, dict[str, Result]] = {}

    def _run_id(self, job_id: str) -> str:
        return self._runs.get(job_id, job_id)

    async def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        answer = await self.client.run(doc)
        self._runs[doc["id"]] = answer["id"]
        return {"id": doc["id"], "status": STATUS.get(answer.get("status", ""), "queued"), "run_id": answer["id"]}

    async def get(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.status(self._run_id(job_id))
        out = {"id": job_id, "status": STATUS.get(answer["status"], answer["status"].lower()),
               "run_id": answer.get("id"), "error": answer.get("error")}
        for e in answer.get("output") or []:
            self._keep(job_id, e)
        return out

    def _keep(self, job_id: str, event: Any) -> None:
        if isinstance(event, dict) and event.get("type") == "chunk":
            for r in event["results"]:
                self._results.setdefault(job_id, {})[r["custom_id"]] = Result.model_validate(r)

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Event]:
        n = int(after) if after and after.isdigit() else 0
        while True:
            answer = await self.client.stream(self._run_id(job_id))
            for item in answer.get("stream", []):
                n += 1
                event = item.get("output")
                self._keep(job_id, event)
                yield str(n), event
                if isinstance(event, dict) and event.get("type") == "final":
                    return
            status = answer.get("status")
            if status in FINAL_STATES and not answer.get("stream"):
                final = await self.client.status(self._run_id(job_id))
                # CANCELLED and FAILED end the job too (with no `final` from the worker)
                yield "final", {"type": "final", "job_id": job_id, "status": STATUS.get(status, "failed"),
                                "summary": None, "error": final.get("error")}
                return
            if not answer.get("stream"):
                await asyncio.sleep(self.poll_s)

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        if job_id not in self._results:
            await self.get(job_id)
        ordered = sorted(self._results.get(job_id, {}).values(), key=lambda r: r.custom_id)
        page = [r for r in ordered if after is None or r.custom_id > after][:limit]
        return page, page[-1].custom_id if len(page) == limit else None

    async def cancel(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.cancel(self._run_id(job_id))
        return {"id": job_id, "status": STATUS.get(answer.get("status", ""), "cancelled")}

    async def aclose(self) -> None:
        await self.client.aclose()


# ## local and modal: results in the store Settings configure


class _StoreReads:
    store: Any

    async def get(self, job_id: str) -> dict[str, Any]:
        record = await self.store.get_job(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}")
        return record.model_dump(mode="json")

    async def results(self, job_id: str, after: str | None, limit: int) -> tuple[list[Result], str | None]:
        page = await self.store.results(job_id, after=after, limit=limit)
        return page, page[-1].custom_id if len(page) == limit else None


class LocalBackend(_StoreReads):
    """The engine boots on the first job; results go to the store Settings configure."""

    def __init__(self, settings: Settings, *, store: Any = None, service: Any = None):
        self.settings = settings
        self.store = store or open_store(settings)
        self.dispatcher = LocalDispatcher(settings, self.store, service=service)

    async def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        job = parse_job_document(doc, any_model=True, strict=True)
        await self.store.accept(job)
        await self.dispatcher.submit(job, doc)
        return {"id": job.id, "status": "queued", "total": job.total}

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Event]:
        async for ev in follow(self.dispatcher.events, self.store, job_id, after, poll_s=0.1):
            yield ev.id, ev.data

    async def cancel(self, job_id: str) -> dict[str, Any]:
        await self.dispatcher.cancel(job_id)
        return await self.get(job_id)

    async def aclose(self) -> None:
        await self.dispatcher.close()
        await self.store.close()


class ModalBackend(_StoreReads):
    """The deployed Modal app. Default: `LLMJobs.run.spawn` (durable; retried if a container dies),
    and the stream is the final event. With `live=True`: `LLMJobs.stream.remote_gen`, every chunk
    as it is stored; the job runs while the stream is read (closing it stops the job, and a
    re-submit with the same id resumes). Results are read from the store Settings configure."""

    def __init__(self, settings: Settings, *, live: bool = False, cls: Any = None, store: Any = None):
        if cls is None:
            import modal

            cls = modal.Cls.from_name(settings.modal_app_name, settings.modal_class_name)
        self._cls = cls
        self.live = live
        self.store = store or open_store(settings)
        self._calls: dict[str, Any] = {}  # job id -> FunctionCall (spawned)
        self._docs: dict[str, dict[str, Any]] = {}  # job id -> document (live, not started yet)

    async def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.live:
            self._docs[doc["id"]] = doc
            return {"id": doc["id"], "status": "queued"}
        call = await self._cls().run.spawn.aio(doc)
        self._calls[doc["id"]] = call
        return {"id": doc["id"], "status": "queued", "call_id": call.object_id}

    async def events(self, job_id: str, after: str | None) -> AsyncIterator[Event]:
        if job_id in self._docs:
            n = 0
            async for event in self._cls().stream.remote_gen.aio(self._docs[job_id]):
                n += 1
                yield str(n), event
            self._docs.pop(job_id, None)
            return
        final = await self._calls[job_id].get.aio()
        yield "final", final

    async def cancel(self, job_id: str) -> dict[str, Any]:
        if job_id in self._calls:
            await self._calls[job_id].cancel.aio()
        self._docs.pop(job_id, None)
        return {"id": job_id, "status": "cancelled"}

    async def aclose(self) -> None:
        await self.store.close()
