"""The SDK's modal backend, with a stand-in for the deployed class (Modal itself is unreachable here):
`.run.spawn` and `.stream.remote_gen` run the same code the container runs, on a fake engine."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from handler.platforms.modal import run_to_end, stream_events
from handler.service import JobService
from shared import AsyncClient
from shared.contracts.settings import Settings
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine


def deployed(service: JobService):
    """What `modal.Cls.from_name("llm-jobs", "LLMJobs")` gives, for the calls the SDK makes."""

    class Call:
        def __init__(self, doc):
            self.object_id = f"fc-{doc['id']}"
            self._task = asyncio.create_task(run_to_end(service, doc))
            self.get = SimpleNamespace(aio=lambda: self._task)
            self.cancel = SimpleNamespace(aio=self._cancel)

        async def _cancel(self):
            self._task.cancel()

    async def spawn(doc):
        return Call(doc)

    def remote_gen(doc):
        return stream_events(service, doc)

    obj = SimpleNamespace(run=SimpleNamespace(spawn=SimpleNamespace(aio=spawn)),
                          stream=SimpleNamespace(remote_gen=SimpleNamespace(aio=remote_gen)))
    return lambda: obj


ITEMS = [{"custom_id": f"m{i}", "prompt": "x"} for i in range(5)]


async def test_spawned_and_live_jobs(tmp_path):
    settings = Settings(_env_file=None, sqlite_path=tmp_path / "m.db")
    store = SQLiteStore(tmp_path / "m.db")
    service = JobService(FakeEngine(), settings, store=store)
    async with AsyncClient("modal", settings=settings, cls=deployed(service), store=store) as sdk:
        job = await sdk.submit(ITEMS, id="spawned", model="fake-model", chunk_size=2)
        assert job.submitted["call_id"] == "fc-spawned"
        events = [e async for e in job.stream()]
        assert [e.type for e in events] == ["final"] and events[0].status == "completed"
        assert [r.custom_id async for r in job.results()] == [f"m{i}" for i in range(5)]

    async with AsyncClient("modal", settings=settings, cls=deployed(service), store=store, live=True) as sdk:
        job = await sdk.submit(ITEMS, id="live", model="fake-model", chunk_size=2)
        events = [e async for e in job.stream()]
        assert [e.type for e in events] == ["chunk", "chunk", "chunk", "final"]
        assert (await job.wait()).status == "completed"
        assert (await sdk.get("live"))["completed"] == 5
