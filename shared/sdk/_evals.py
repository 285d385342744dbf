"""`client.evals` and `client.schedules`: eval suites, runs and schedules through the API (http backend).

    async with AsyncClient("http", base_url=URL, api_key=KEY) as client:
        run = await client.evals.run("examples/evals/grading_ca.yaml", baseline="last")
        async for event in run.job.stream():    # the run is a job: its results as they are stored
            ...
        view = await run.wait()                  # status, scores, regressions
        if view["regressed"]:
            ...
        await client.schedules.add("nightly", suite="compliance", cron="0 3 * * *")

A suite file is checked here first (every problem named with its case, field and line) and sent as
it is; the server checks it again. A run's id is chosen here, so a retried request never makes two.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal

from shared.contracts.errors import InputError, Issue
from shared.evals.records import new_run_id
from shared.evals.suite import parse_suite
from shared.sdk._backends import HttpBackend
from shared.sdk._client import AsyncJob, JobHandle, blocking_iter

#: a suite given as a file (else a string is a stored suite's id)
SUITE_FILES = (".yaml", ".yml", ".json")
#: statuses after which a run changes no more
ENDED = ("completed", "failed", "cancelled")

SuiteInput = str | Path | dict[str, Any]


def _suite_text(suite: Path | dict[str, Any]) -> str:
    """The suite's text, checked here first: InputError names each problem's case, field and line."""
    if isinstance(suite, dict):
        text = json.dumps(suite)
    else:
        try:
            text = suite.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError([Issue(f"{suite}: {e}", field="suite")]) from None
    parse_suite(text, any_model=True)
    return text


def _is_file(suite: SuiteInput) -> bool:
    return isinstance(suite, Path) or (isinstance(suite, str) and suite.lower().endswith(SUITE_FILES)
                                       and Path(suite).is_file())


class AsyncEvalRun:
    """A submitted eval run: its job (stream, results) and its scores once it has ended."""

    def __init__(self, evals: AsyncEvals, view: dict[str, Any]):
        self._evals = evals
        self.id: str = view["id"]
        self.view = view

    def __repr__(self) -> str:
        return f"AsyncEvalRun(id={self.id!r})"

    @property
    def job(self) -> AsyncJob:
        """The run's job (the same id): `stream()` its events, `results()` its outputs, `cancel()`."""
        return AsyncJob(self._evals.backend, self.id, self.view)

    async def status(self) -> dict[str, Any]:
        self.view = await self._evals.get_run(self.id)
        return self.view

    async def wait(self, timeout: float | None = None, *, poll_s: float = 0.5) -> dict[str, Any]:  # noqa: ASYNC109
        """The run once it has ended and been scored: its status, scores and regressions. TimeoutError
        after `timeout` s. The job's events are followed first; then the run is read until its scores
        are recorded (the worker records them after the job's last chunk)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await asyncio.wait_for(self.job.wait(raise_on_failure=False), timeout)
        while (await self.status())["status"] not in ENDED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"eval run {self.id} was not scored within {timeout} s")
            await asyncio.sleep(poll_s)
        return self.view

    async def cases(self, *, page_size: int = 500) -> AsyncIterator[dict[str, Any]]:
        """Each case's result (passed, score, outcomes, label, output), in case id order."""
        async for case in self._evals.cases(self.id, page_size=page_size):
            yield case


class AsyncEvals:
    def __init__(self, backend: HttpBackend):
        self.backend = backend

    async def put_suite(self, suite: Path | str | dict[str, Any]) -> dict[str, Any]:
        """Store a suite (a YAML or JSON file, or its document): its id, version and case count. The same
        content again stores nothing new (`created` is false)."""
        text = await asyncio.to_thread(_suite_text, Path(suite) if isinstance(suite, str) else suite)
        return await self.backend.call("POST", "/v1/evals/suites", content=text.encode(),
                                       headers={"Content-Type": "application/yaml"})

    async def get_suite(self, suite_id: str) -> dict[str, Any]:
        return await self.backend.call("GET", f"/v1/evals/suites/{suite_id}")

    async def run(self, suite: SuiteInput, *, model: str | None = None, adapter: str | None = None,
                  baseline: str | None = None, id: str | None = None, git_rev: str | None = None) -> AsyncEvalRun:
        """Run a suite as a job: a file or document (stored first), or a stored suite's id. `adapter`: the LoRA
        adapter that answers the cases (`client.models()` lists them). `baseline`: a run id of the same suite, or
        "last". The same `id` again answers the run that has it."""
        if isinstance(suite, dict) or _is_file(suite):
            suite_id = (await self.put_suite(suite))["id"]
        else:
            suite_id = str(suite)
        body = {"suite": suite_id, "model": model, "adapter": adapter, "baseline": baseline,
                "id": id or new_run_id(suite_id), "git_rev": git_rev}
        view = await self.backend.call("POST", "/v1/evals/runs", json={k: v for k, v in body.items()
                                                                       if v is not None})
        return AsyncEvalRun(self, view)

    def handle(self, run_id: str) -> AsyncEvalRun:
        """A handle on a run submitted earlier."""
        return AsyncEvalRun(self, {"id": run_id})

    async def get_run(self, run_id: str) -> dict[str, Any]:
        """A run's status and progress, and its scores and regressions once it has ended."""
        return await self.backend.call("GET", f"/v1/evals/runs/{run_id}")

    async def cases(self, run_id: str, *, page_size: int = 500) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            params = {"limit": page_size, **({"after": after} if after else {})}
            page = await self.backend.call("GET", f"/v1/evals/runs/{run_id}/cases", params=params)
            for case in page["data"]:
                yield case
            after = page["next_after"]
            if after is None:
                return

    async def history(self, suite_id: str, *, limit: int = 20, before: str | None = None) -> dict[str, Any]:
        """A page of the suite's runs, newest first: `{"data": [run, ...], "next_before": id | None}`."""
        params = {"limit": limit, **({"before": before} if before else {})}
        return await self.backend.call("GET", f"/v1/evals/suites/{suite_id}/history", params=params)


class AsyncSchedules:
    def __init__(self, backend: HttpBackend):
        self.backend = backend

    async def list(self) -> list[dict[str, Any]]:
        return (await self.backend.call("GET", "/v1/schedules"))["data"]

    async def add(self, id: str, *, suite: str, cron: str, model: str | None = None,
                  enabled: bool = True) -> dict[str, Any]:
        """Run a stored suite at each slot of `cron` (five fields, UTC), e.g. "0 3 * * *" for 03:00 nightly."""
        body = {"id": id, "suite": suite, "cron": cron, "model": model, "enabled": enabled}
        return await self.backend.call("POST", "/v1/schedules", json={k: v for k, v in body.items() if v is not None})

    async def remove(self, id: str) -> None:
        await self.backend.call("DELETE", f"/v1/schedules/{id}")


# ## The blocking twins (`Client.evals`, `Client.schedules`)


class EvalRunHandle:
    """The blocking twin of AsyncEvalRun."""

    def __init__(self, portal: BlockingPortal, run: AsyncEvalRun):
        self._portal, self._run = portal, run
        self.id = run.id

    def __repr__(self) -> str:
        return f"EvalRunHandle(id={self.id!r})"

    @property
    def view(self) -> dict[str, Any]:
        return self._run.view

    @property
    def job(self) -> JobHandle:
        return JobHandle(self._portal, self._run.job)

    def status(self) -> dict[str, Any]:
        return self._portal.call(self._run.status)

    def wait(self, timeout: float | None = None, *, poll_s: float = 0.5) -> dict[str, Any]:
        return self._portal.call(lambda: self._run.wait(timeout, poll_s=poll_s))

    def cases(self, *, page_size: int = 500) -> Iterator[dict[str, Any]]:
        return blocking_iter(self._portal, self._run.cases(page_size=page_size))


class Evals:
    """The blocking twin of AsyncEvals."""

    def __init__(self, portal: BlockingPortal, evals: AsyncEvals):
        self._portal, self._evals = portal, evals

    def put_suite(self, suite: Path | str | dict[str, Any]) -> dict[str, Any]:
        return self._portal.call(self._evals.put_suite, suite)

    def get_suite(self, suite_id: str) -> dict[str, Any]:
        return self._portal.call(self._evals.get_suite, suite_id)

    def run(self, suite: SuiteInput, **options: Any) -> EvalRunHandle:
        return EvalRunHandle(self._portal, self._portal.call(lambda: self._evals.run(suite, **options)))

    def handle(self, run_id: str) -> EvalRunHandle:
        return EvalRunHandle(self._portal, self._evals.handle(run_id))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._portal.call(self._evals.get_run, run_id)

    def cases(self, run_id: str, *, page_size: int = 500) -> Iterator[dict[str, Any]]:
        return blocking_iter(self._portal, self._evals.cases(run_id, page_size=page_size))

    def history(self, suite_id: str, *, limit: int = 20, before: str | None = None) -> dict[str, Any]:
        return self._portal.call(lambda: self._evals.history(suite_id, limit=limit, before=before))


class Schedules:
    """The blocking twin of AsyncSchedules."""

    def __init__(self, portal: BlockingPortal, schedules: AsyncSchedules):
        self._portal, self._schedules = portal, schedules

    def list(self) -> list[dict[str, Any]]:
        return self._portal.call(self._schedules.list)

    def add(self, id: str, **options: Any) -> dict[str, Any]:
        return self._portal.call(lambda: self._schedules.add(id, **options))

    def remove(self, id: str) -> None:
        self._portal.call(self._schedules.remove, id)
