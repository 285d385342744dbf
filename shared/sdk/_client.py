"""`AsyncClient` / `Client`: submit a job to a backend and follow it.

    async with AsyncClient("http", base_url="https://jobs.example.com", api_key=KEY) as client:
        job = await client.submit("essays.jsonl", template=..., response_format=...)
        async for event in job.stream():          # ChunkEvent as results are stored, then FinalEvent
            print(event.type, event.progress if event.type == "chunk" else "")
        async for result in job.results():        # every result, page by page
            ...

`Client` is the same, blocking (it runs an event loop in a thread of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydantic import ValidationError

from shared.contracts.adapters import model_list
from shared.contracts.errors import ConfigError, InputError, Issue, JobFailed
from shared.contracts.events import Event, FinalEvent, GapEvent, Outcome
from shared.contracts.inputs import parse_job, parse_job_document
from shared.contracts.models import Item, Job, JobOptions, Result, new_job_id
from shared.contracts.settings import Settings, get_settings
from shared.contracts.tasks import Task, load_tasks
from shared.queue.runpod import RunpodClient
from shared.sdk._backends import Backend, HttpBackend, LocalBackend, ModalBackend, RunpodBackend
from shared.sdk._training import Examples, training_document

if TYPE_CHECKING:
    from shared.sdk._evals import AsyncEvals, AsyncSchedules, Evals, Schedules

BackendName = Literal["http", "runpod", "modal", "local"]
JobInput = Job | dict[str, Any] | list[dict[str, Any] | Item] | str | Path


def _is_jsonl_file(job: JobInput) -> bool:
    return isinstance(job, str | Path) and Path(job).suffix.lower() in (".jsonl", ".ndjson") and Path(job).is_file()


def _json_options(options: dict[str, Any]) -> dict[str, Any]:
    """Job options as JSON (pydantic models among them, e.g. Sampling), checked here first."""
    try:
        opts = JobOptions.model_validate({"id": new_job_id(), **options})
    except ValidationError as e:
        raise InputError([Issue(err["msg"], field=".".join(map(str, err["loc"]))) for err in e.errors()]) from None
    return opts.model_dump(mode="json", by_alias=True, exclude_none=True, include=set(options))


def _validated(job: JobInput, options: dict[str, Any], tasks: Mapping[str, Task] | None = None) -> Job:
    """A validated Job with an id, from whatever the caller has (InputError names line and field); a job that
    names a task gets its options from `tasks`."""
    if isinstance(job, (str, Path)):
        # the id defaults to a new one
        return parse_job(job, options=options or None, any_model=True, strict=True, tasks=tasks)
    if isinstance(job, Job):
        if not options and job.prepared is not None:
            return job  # validated already
        doc = job.wire()
    elif isinstance(job, list):
        doc = {"items": [i.model_dump(mode="json", exclude_none=True) if isinstance(i, Item) else i for i in job]}
    else:
        doc = dict(job)
    return parse_job_document({**doc, **options}, any_model=True, strict=True, tasks=tasks)


class AsyncJob:
    """A submitted job. `stream()` resumes where it left off; `wait()` and `results()` read the rest.

    `gaps` counts the `gap` events seen: the event stream dropped events before this reader got
    them (it keeps only its last EVENTS_MAXLEN). No result is lost: `results()` reads them all.
    """

    def __init__(self, backend: Backend, job_id: str, submitted: dict[str, Any]):
        self._backend = backend
        self.id = job_id
        self.submitted = submitted
        self.final: FinalEvent | None = None
        self.gaps = 0
        self._last_event: str | None = None

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r})"

    async def stream(self) -> AsyncIterator[Event]:
        """Events as they come (ChunkEvent with results and progress, or ProgressEvent), then FinalEvent.

        A GapEvent says events were dropped before they reached this reader: chunks' results were
        missed here, not lost. Read them with `results()` (every stored result) once the job ends.
        """
        if self.final is not None:
            yield self.final
            return
        async for event_id, event in self._backend.events(self.id, self._last_event):
            self._last_event = event_id or self._last_event
            if isinstance(event, FinalEvent):
                self.final = event
            elif isinstance(event, GapEvent):
                self.gaps += 1
            yield event

    async def wait(self, timeout: float | None = None, *, raise_on_failure: bool = True) -> FinalEvent:  # noqa: ASYNC109
        """The final event. Raises TimeoutError after `timeout` s, JobFailed if the job failed."""
        async def drain() -> FinalEvent:
            async for _ in self.stream():
                pass
            assert self.final is not None
            return self.final

        final = await asyncio.wait_for(drain(), timeout)
        if raise_on_failure and final.outcome is Outcome.failed:
            raise JobFailed(f"job {self.id} failed: {final.summary.reason or 'failed'}")
        return final

    async def results(self, *, page_size: int = 500) -> AsyncIterator[Result]:
        """Every stored result, ordered by custom_id."""
        after = None
        while True:
            page, after = await self._backend.results(self.id, after, page_size)
            for r in page:
                yield r
            if after is None:
                return

    async def status(self) -> dict[str, Any]:
        return await self._backend.get(self.id)

    async def cancel(self) -> dict[str, Any]:
        return await self._backend.cancel(self.id)


class AsyncClient:
    def __init__(self, backend: BackendName = "http", *, base_url: str | None = None, api_key: str | None = None,
                 endpoint_id: str | None = None, timeout_s: float | None = None, settings: Settings | None = None,
                 **backend_options: Any):
        """`settings` (default: the environment's) fills what is not given: RUNPOD_*, MODAL_*, the store."""
        s = settings or get_settings()
        timeout = timeout_s or s.http_timeout_s
        self.backend_name = backend
        self._settings = s
        self._tasks: dict[str, Task] | None = None
        if backend == "http":
            base_url = base_url or s.api_url
            api_key = api_key or (s.api_key.get_secret_value() if s.api_key else None)
            if not base_url:
                raise ConfigError("the http backend needs base_url (or API_URL): your `llm-jobs serve` URL")
            self._backend: Backend = HttpBackend(base_url, api_key, timeout_s=timeout, **backend_options)
        elif backend == "runpod":
            endpoint = endpoint_id or s.runpod_endpoint_id
            key = api_key or (s.runpod_api_key.get_secret_value() if s.runpod_api_key else None)
            if not endpoint:
                raise ConfigError("the runpod backend needs endpoint_id (or RUNPOD_ENDPOINT_ID)")
            client = RunpodClient(endpoint, key, base_url=base_url or s.runpod_base_url, timeout_s=timeout)
            self._backend = RunpodBackend(client, **backend_options)
        elif backend == "modal":
            self._backend = ModalBackend(s, **backend_options)
        elif backend == "local":
            self._backend = LocalBackend(s, **backend_options)
        else:
            raise ConfigError(f"unknown backend {backend!r}: http, runpod, modal or local")

    async def submit(self, job: JobInput, **options: Any) -> AsyncJob:
        """Submit a Job, a job document, a list of items, or a job file (Job JSON, items or OpenAI Batch JSONL).

        Keyword options (template, system, sampling, response_format, chunk_size, id, ...) apply to
        the job. The input is validated here first: an InputError names the line and field.
        """
        if isinstance(self._backend, HttpBackend) and _is_jsonl_file(job):
            # a JSONL file goes to the API as a streamed upload, validated there line by line, so a
            # file of any size is never read whole here (README, "Big jobs")
            opts = {"id": new_job_id(), **_json_options(options)}
            answer = await self._backend.submit_file(Path(job), opts)
            return AsyncJob(self._backend, answer.get("id", opts["id"]), answer)
        tasks = None if isinstance(job, Job) and not options else await self._task_presets()
        validated = _validated(job, options, tasks)
        answer = await self._backend.submit(validated)
        return AsyncJob(self._backend, answer.get("id", validated.id), answer)

    async def train(self, data: Examples, *, adapter: str, held_out: Examples | None = None, id: str | None = None,
                    **config: Any) -> AsyncJob:
        """Start a training job (README, "Fine-tuning"): a LoRA adapter named `adapter`, trained on `data` (a
        directory `llm-jobs data prepare` wrote, a JSONL file or a list of chat examples), measured on
        `held_out` (a directory's eval.jsonl by default). `config` is TrainConfig's fields: max_steps, epochs,
        learning_rate, lora={"r": 16, ...}, batch_size, ... Its `stream()` yields TrainEvents (step, loss,
        eval loss, learning rate, tokens/s, ETA); `wait()` ends with the TrainReport in `summary.training`."""
        doc = await asyncio.to_thread(training_document, data, adapter=adapter, held_out=held_out, id=id, **config)
        return await self.submit(doc)

    async def tasks(self) -> list[dict[str, Any]]:
        """The named tasks a job may name (`submit(records, task="grade-ca")`): each one's id, description,
        the fields its template reads, and the options it sets. Through the API, the server's; else this
        machine's TASKS_DIR."""
        return [{"id": t.id, "description": t.description, "fields": t.fields(), "options": t.options}
                for t in (await self._task_presets()).values()]

    async def models(self) -> list[dict[str, Any]]:
        """The model and the LoRA adapters a job may name (`model`, `adapter`), as OpenAI lists models: each one's
        `id`, and an adapter's `parent` (the base model). Through the API, `GET /v1/models`; with the local and
        modal backends, the engine's (once it booted) or the store's for the configured model; with runpod, the
        configured model alone."""
        if isinstance(self._backend, HttpBackend):
            return (await self._backend.call("GET", "/v1/models"))["data"]
        lifecycle = getattr(self._backend, "lifecycle", None)
        if lifecycle is not None:
            return (await lifecycle.serving()).listing()["data"]
        return model_list(self._settings.served_model, [])["data"]

    async def _task_presets(self) -> dict[str, Task]:
        """The tasks a job may name, read once: the server's (GET /v1/tasks) through the API, else TASKS_DIR's."""
        if self._tasks is None:
            if isinstance(self._backend, HttpBackend):
                found = (await self._backend.call("GET", "/v1/tasks"))["data"]
                self._tasks = {t["id"]: Task.model_validate({k: t[k] for k in ("id", "description", "options")})
                               for t in found}
            else:
                self._tasks = await asyncio.to_thread(load_tasks, self._settings.task_presets)
        return self._tasks

    def job(self, job_id: str) -> AsyncJob:
        """A handle on a job submitted earlier (stream, wait, results, cancel)."""
        return AsyncJob(self._backend, job_id, {})

    async def get(self, job_id: str) -> dict[str, Any]:
        """A job's status and counters."""
        return await self._backend.get(job_id)

    async def list(self, *, status: str | None = None, limit: int = 50, after: str | None = None) -> dict[str, Any]:
        """A page of your jobs, newest first: `{"data": [job, ...], "next_after": id | None}`. Pass
        `next_after` as `after` for the next page. Through the API you see only your own jobs (an admin
        key: everyone's)."""
        return await self._backend.list(status=status, limit=limit, after=after)

    @property
    def evals(self) -> AsyncEvals:
        """Eval suites and runs through the API (shared/sdk/_evals.py): `put_suite`, `run`, `get_run`,
        `cases`, `history`."""
        from shared.sdk._evals import AsyncEvals

        return AsyncEvals(self._http_backend("evals"))

    @property
    def schedules(self) -> AsyncSchedules:
        """Scheduled eval runs through the API: `list`, `add`, `remove`."""
        from shared.sdk._evals import AsyncSchedules

        return AsyncSchedules(self._http_backend("schedules"))

    def _http_backend(self, what: str) -> HttpBackend:
        if not isinstance(self._backend, HttpBackend):
            raise ConfigError(f"{what} go through the API: use the http backend (`llm-jobs serve`), not "
                              f"{self.backend_name}")
        return self._backend

    async def aclose(self) -> None:
        await self._backend.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def blocking_iter(portal: BlockingPortal, agen: AsyncIterator[Any]) -> Iterator[Any]:
    """An async iterator read from a blocking caller, one item at a time through `portal`."""
    while True:
        try:
            yield portal.call(agen.__anext__)
        except StopAsyncIteration:
            return


class JobHandle:
    """The blocking twin of AsyncJob."""

    def __init__(self, portal: BlockingPortal, job: AsyncJob):
        self._portal, self._job = portal, job
        self.id = job.id

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r})"

    @property
    def gaps(self) -> int:
        """`gap` events seen while streaming: read `results()` for what they skipped."""
        return self._job.gaps

    def stream(self) -> Iterator[Event]:
        return blocking_iter(self._portal, self._job.stream())

    def wait(self, timeout: float | None = None, *, raise_on_failure: bool = True) -> FinalEvent:
        return self._portal.call(lambda: self._job.wait(timeout, raise_on_failure=raise_on_failure))

    def results(self, *, page_size: int = 500) -> Iterator[Result]:
        return blocking_iter(self._portal, self._job.results(page_size=page_size))

    def status(self) -> dict[str, Any]:
        return self._portal.call(self._job.status)

    def cancel(self) -> dict[str, Any]:
        return self._portal.call(self._job.cancel)


class Client:
    """The blocking client: the same backends and calls as AsyncClient."""

    def __init__(self, backend: BackendName = "http", **kwargs: Any):
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._async = self._portal.call(lambda: _make(backend, kwargs))
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def submit(self, job: JobInput, **options: Any) -> JobHandle:
        return JobHandle(self._portal, self._portal.call(lambda: self._async.submit(job, **options)))

    def job(self, job_id: str) -> JobHandle:
        return JobHandle(self._portal, self._async.job(job_id))

    def train(self, data: Examples, *, adapter: str, held_out: Examples | None = None, id: str | None = None,
              **config: Any) -> JobHandle:
        """See AsyncClient.train."""
        return JobHandle(self._portal, self._portal.call(
            lambda: self._async.train(data, adapter=adapter, held_out=held_out, id=id, **config)))

    def tasks(self) -> list[dict[str, Any]]:
        return self._portal.call(self._async.tasks)

    def models(self) -> list[dict[str, Any]]:
        return self._portal.call(self._async.models)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._portal.call(self._async.get, job_id)

    def list(self, *, status: str | None = None, limit: int = 50, after: str | None = None) -> dict[str, Any]:
        return self._portal.call(lambda: self._async.list(status=status, limit=limit, after=after))

    @property
    def evals(self) -> Evals:
        from shared.sdk._evals import Evals

        return Evals(self._portal, self._async.evals)

    @property
    def schedules(self) -> Schedules:
        from shared.sdk._evals import Schedules

        return Schedules(self._portal, self._async.schedules)

    def close(self) -> None:
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(backend: BackendName, kwargs: dict[str, Any]) -> AsyncClient:
    return AsyncClient(backend, **kwargs)  # created inside the portal's loop, where it will run
