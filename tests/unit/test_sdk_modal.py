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


async def test_a_training_job_is_spawned_on_the_training_function(tmp_path):
    settings = Settings(_env_file=None, sqlite_path=tmp_path / "m.db")
    store = SQLiteStore(tmp_path / "m.db")
    spawned: list[dict] = []

    async def spawn(doc):  # modal.Function.from_name("llm-jobs", "train"): its final event is the call's value
        spawned.append(doc)
        final = {"type": "final", "job_id": doc["id"], "outcome": "completed",
                 "summary": {"total": 1, "completed": 1, "failed": 0, "elapsed_s": 1, "items_per_s": 1,
                             "prompt_tokens": 9, "completion_tokens": 0, "tokens_per_s": 9,
                             "training": {"adapter": "a1"}}}
        return SimpleNamespace(object_id="fc-train", get=SimpleNamespace(aio=lambda: asyncio.sleep(0, final)))

    train = SimpleNamespace(spawn=SimpleNamespace(aio=spawn))
    service = JobService(FakeEngine(), settings, store=store)
    async with AsyncClient("modal", settings=settings, cls=deployed(service), train=train, store=store) as sdk:
        job = await sdk.train([{"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]}],
                              adapter="a1", id="t1", max_steps=3)
        assert job.submitted["call_id"] == "fc-train" and spawned[0]["training"]["adapter"] == "a1"
        assert (await job.wait()).summary.training == {"adapter": "a1"}
