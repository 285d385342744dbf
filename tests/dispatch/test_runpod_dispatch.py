"""The RunPod dispatcher against the RunPod stand-in (testkit/runpod_api.py): one /run per dispatch,
and the job-to-request map in the store (issue 11, finding 9).

RunPod's serverless API has no idempotency key and no way to find a request by its input, so a
/run whose answer is lost is never sent again: the job may be running. Connection failures and 429
(the request never got in) are retried. The request id lives in the store, so any API replica,
or one started later, cancels the job.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from shared.contracts.errors import ConfigError
from shared.contracts.models import JobStatus
from shared.contracts.settings import Settings
from shared.contracts.shards import plan_shards
from shared.queue.runpod import RunpodClient, RunpodError
from shared.server.dispatch import RunpodDispatcher, make_dispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job

KEY = "rp-test-key"
ENDPOINT = "ep1"


@pytest.fixture
def runpod():
    from testkit.runpod_api import FakeRunpod

    api = FakeRunpod(api_key=KEY).start()
    yield api
    api.stop()


def client(runpod, timeout_s: float = 5) -> RunpodClient:
    return RunpodClient(ENDPOINT, KEY, base_url=f"{runpod.url}/v2", timeout_s=timeout_s)


def settings(tmp_path, runpod, **kw) -> Settings:
    return Settings(_env_file=None, dispatcher="runpod", runpod_endpoint_id=ENDPOINT, runpod_api_key=KEY,
                    runpod_base_url=f"{runpod.url}/v2", sqlite_path=tmp_path / "jobs.db", store_retry_s=2, **kw)


@pytest_asyncio.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "jobs.db", timeout_s=5)
    yield s
    await s.close()


def refs(job) -> list:
    return plan_shards(job, job.total, 1000)


def replica(runpod, store, **kw) -> RunpodDispatcher:
    """A dispatcher as an API process makes one: fresh, knowing only the store."""
    return RunpodDispatcher(client(runpod, **kw), store)


async def test_a_run_whose_answer_times_out_is_not_sent_again(runpod, store, tmp_path):
    runpod.delay_runs = [2.0]  # RunPod queues the job, but answers after the client gave up
    dispatcher = replica(runpod, store, timeout_s=0.5)
    lifecycle = JobLifecycle(store, dispatcher, settings(tmp_path, runpod))
    job = make_job(2, id="slow-run")
    with pytest.raises(RunpodError, match="may have started"):
        await lifecycle.submit(job)
    await asyncio.sleep(2.0)  # anything still on its way has arrived by now
    assert [run_input["job"]["id"] for _, run_input in runpod.seen.runs] == ["slow-run"]  # exactly one RunPod job
    record = await store.get_job(job.id)
    assert record.status == JobStatus.failed and "may have started" in record.error
    await dispatcher.close()


async def test_a_run_refused_before_it_got_in_is_retried_once_more(runpod, store):
    runpod.refuse_runs = 1  # 429: RunPod took nothing
    dispatcher = replica(runpod, store)
    job = make_job(1, id="busy")
    await store.accept(job)
    await dispatcher.submit(refs(job))
    ((run_id, _),) = runpod.seen.runs
    assert await store.get_dispatch_ref(job.id) == run_id
    await dispatcher.close()


async def test_a_connection_refused_is_retried_and_then_reported(store):
    # nothing listens there: the request never left, so retrying it is safe (and it fails in the end)
    from testkit.serve import free_port

    dead = RunpodClient(ENDPOINT, KEY, base_url=f"http://127.0.0.1:{free_port()}/v2", timeout_s=1)
    dead.attempts = 2
    dispatcher = RunpodDispatcher(dead, store)
    job = make_job(1, id="nowhere")
    await store.accept(job)
    with pytest.raises(RunpodError, match="ConnectError") as e:
        await dispatcher.submit(refs(job))
    assert "may have started" not in str(e.value)
    await dispatcher.close()


async def test_cancel_works_from_another_replica(runpod, store, tmp_path):
    first = replica(runpod, store)
    job = make_job(3, id="to-cancel")
    await JobLifecycle(store, first, settings(tmp_path, runpod)).submit(job)
    ((run_id, _),) = runpod.seen.runs
    await first.close()
    # another API process (or this one after a restart): its own store connection, no memory of the run
    other_store = SQLiteStore(tmp_path / "jobs.db", timeout_s=5)
    second = replica(runpod, other_store)
    lifecycle = JobLifecycle(other_store, second, settings(tmp_path, runpod))
    cancelled = await lifecycle.cancel(job.id)
    assert runpod.seen.cancels == [run_id] and runpod.state(run_id) == "CANCELLED"
    assert cancelled.stopped_before_start and cancelled.record.status == JobStatus.cancelled
    await second.close()
    await other_store.close()


async def test_cancel_of_a_job_never_sent_to_runpod_asks_nothing(runpod, store):
    dispatcher = replica(runpod, store)
    await store.accept(make_job(1, id="never-sent"))
    assert await dispatcher.cancel("never-sent") is False
    assert runpod.seen.cancels == []
    await dispatcher.close()


async def test_make_dispatcher_gives_the_runpod_dispatcher_the_store(runpod, store, tmp_path):
    dispatcher = make_dispatcher(settings(tmp_path, runpod), store)
    assert isinstance(dispatcher, RunpodDispatcher) and dispatcher.store is store
    assert str(dispatcher.client._http.base_url).startswith(runpod.url)
    await dispatcher.close()
    with pytest.raises(ConfigError, match="RUNPOD_ENDPOINT_ID"):
        make_dispatcher(settings(tmp_path, runpod).model_copy(update={"runpod_endpoint_id": None}), store)


async def test_a_job_of_several_shards_is_one_run_each_and_cancel_reaches_them_all(runpod, store, tmp_path):
    lifecycle = JobLifecycle(store, replica(runpod, store), settings(tmp_path, runpod, shard_size=2))
    await lifecycle.submit(make_job(5, id="three-shards"))
    run_ids = [run_id for run_id, _ in runpod.seen.runs]
    assert [r["shard"] for _, r in runpod.seen.runs] == [0, 1, 2]
    assert await store.get_dispatch_ref("three-shards") == ",".join(run_ids)
    cancelled = await lifecycle.cancel("three-shards")
    assert runpod.seen.cancels == run_ids
    assert cancelled.stopped_before_start and cancelled.record.status == JobStatus.cancelled
    await lifecycle.close()


# ## Training jobs: a training endpoint of their own (issue 16)

TRAIN_ENDPOINT = "ep-train"


def training_job(n: int, **options):
    from shared.contracts.models import Item, Job
    from shared.contracts.training import TrainConfig

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    return Job(items=[Item(custom_id=f"train-{i}", messages=chat) for i in range(n)],
               training=TrainConfig(adapter="my-adapter"), **options)


@pytest.fixture
def runpod_train():
    """A second endpoint (its own stand-in, so what each one saw stays apart)."""
    from testkit.runpod_api import FakeRunpod

    api = FakeRunpod(api_key=KEY).start()
    yield api
    api.stop()


async def test_a_training_job_goes_to_the_training_endpoint_and_is_cancelled_there(runpod, runpod_train, store,
                                                                                   tmp_path):
    train_client = RunpodClient(TRAIN_ENDPOINT, KEY, base_url=f"{runpod_train.url}/v2", timeout_s=5)
    dispatcher = RunpodDispatcher(client(runpod), store, train_client=train_client)
    lifecycle = JobLifecycle(store, dispatcher, settings(tmp_path, runpod, shard_size=2))
    await lifecycle.submit(training_job(5, id="tune"))
    await lifecycle.submit(make_job(3, id="batch"))
    ((train_run, train_input),) = runpod_train.seen.runs  # one /run: a training job trains whole
    assert train_input["job"]["id"] == "tune" and train_input["job"]["training"]["adapter"] == "my-adapter"
    assert [r["job"]["id"] for _, r in runpod.seen.runs] == ["batch", "batch"]
    assert await store.get_dispatch_ref("tune") == f"train:{train_run}"

    cancelled = await lifecycle.cancel("tune")
    assert runpod_train.seen.cancels == [train_run] and runpod.seen.cancels == []
    assert cancelled.stopped_before_start and cancelled.record.status == JobStatus.cancelled
    assert set(await dispatcher.ready()) == {"runpod", "runpod_train"}
    await lifecycle.close()


async def test_with_no_training_endpoint_a_training_job_goes_to_the_main_one(runpod, store):
    dispatcher = replica(runpod, store)
    job = training_job(2, id="tune-main")
    await store.accept(job)
    await dispatcher.submit(refs(job))
    ((run_id, _),) = runpod.seen.runs
    assert await store.get_dispatch_ref("tune-main") == f"train:{run_id}"
    assert await dispatcher.cancel("tune-main") is True and runpod.seen.cancels == [run_id]
    await dispatcher.close()


async def test_make_dispatcher_gives_training_jobs_their_endpoint(runpod, store, tmp_path):
    dispatcher = make_dispatcher(settings(tmp_path, runpod, runpod_train_endpoint_id=TRAIN_ENDPOINT), store)
    assert str(dispatcher.train_client._http.base_url).endswith(f"/v2/{TRAIN_ENDPOINT}/")
    assert str(dispatcher.client._http.base_url).endswith(f"/v2/{ENDPOINT}/")
    await dispatcher.close()
    plain = make_dispatcher(settings(tmp_path, runpod), store)
    assert plain.train_client is None
    await plain.close()


def test_the_handler_and_the_dispatcher_mark_training_requests_alike():
    from handler.platforms import runpod as handler
    from shared.server import dispatch

    assert handler.TRAIN_REF == dispatch.TRAIN_REF
