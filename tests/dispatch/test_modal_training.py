"""Training jobs on Modal, offline (issue 16): modal_app.py's `train` and `drain_train` functions as declared,
the dispatcher spawning `train` for a training job (and `LLMJobs.run` for the rest), their bodies with a
stand-in trainer (volume commits after checkpoints and at the end, a failure raised for Modal to retry), the
inference class refusing training jobs, and the Cron waking a training GPU for the queue's `train` lane only.

MODAL_CONFIG_PATH points at an empty file (tests/conftest.py), so nothing here can reach Modal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

import modal_app
from handler.platforms.modal import queued_jobs, run_to_end, train_to_end
from handler.service import JobService
from shared.contracts.errors import JobFailed
from shared.contracts.events import Event, FinalEvent, Outcome, TrainEvent
from shared.contracts.models import Item, Job, JobStatus, Summary
from shared.contracts.settings import Settings
from shared.contracts.shards import ShardRef, plan_shards
from shared.contracts.training import TrainConfig
from shared.server.dispatch import ModalDispatcher, make_dispatcher
from shared.stores.base import record_outcome
from shared.stores.sqlite import SQLiteStore
from tests.conftest import UPSTASH_TOKEN, make_job, make_queue
from tests.fakes import FakeEngine


def training_job(n: int = 3, **options: Any) -> Job:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    return Job(items=[Item(custom_id=f"train-{i}", messages=chat) for i in range(n)],
               training=TrainConfig(adapter="my-adapter"), **options)


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "jobs.db", timeout_s=5)
    yield s
    await s.close()


# ## What modal_app.py declares


def test_the_train_function_has_a_gpu_the_training_volume_a_timeout_and_retries():
    info = modal_app.train.info()
    assert info.gpus == [("L40S", 1), ("A100-80GB", 1)] and modal_app.TRAIN_GPU == ["L40S", "A100-80GB"]
    assert info.timeout == modal_app.TRAIN_TIMEOUT_S == 24 * 3600
    assert info.max_retries == modal_app.TRAIN_RETRIES.max_retries >= 1
    # the training volume, writable, where TRAINING_DIR points; the base's weights from the HF cache
    training_dir = modal_app.IMAGE_ENV["TRAINING_DIR"]
    assert {path: (v.name, v.read_only) for path, v in info.volumes.items()} == {
        training_dir: ("llm-jobs-training", False), modal_app.HF_CACHE_PATH: ("llm-jobs-hf-cache", False)}
    assert all(any(name in s for s in info.secrets) for name in modal_app.SECRET_NAMES)
    assert info.concurrency_info is None  # one training job per container: it takes the whole GPU


def test_the_dispatchers_function_name_is_the_apps():
    # make_dispatcher and the SDK find it with modal.Function.from_name(app, MODAL_TRAIN_FUNCTION)
    assert modal_app.train._tag_ == Settings(_env_file=None).modal_train_function


def test_the_inference_class_mounts_the_training_volume_read_only_and_never_trains():
    info = modal_app.LLMJobs._get_class_service_function().info()
    mount = info.volumes[modal_app.IMAGE_ENV["TRAINING_DIR"]]
    assert mount.name == "llm-jobs-training" and mount.read_only
    assert modal_app.INFERENCE_ENV == {"TRAIN_JOBS": "false"}
    # set after the named secrets, so llm-jobs-config cannot turn training on there
    assert info.secrets[-1] == "Secret.from_dict([TRAIN_JOBS])"
    assert Settings(_env_file=None, **{k.lower(): v for k, v in modal_app.INFERENCE_ENV.items()}).train_jobs is False
    assert modal_app.drain_queue.info().gpus == []


def test_the_image_installs_the_train_extras():
    # Modal builds the image remotely: read the extras its pip_install_from_pyproject is given
    import ast
    import tomllib

    tree = ast.parse((modal_app.ROOT / "modal_app.py").read_text())
    (installed,) = [ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                    for k in node.keywords if k.arg == "optional_dependencies"]
    extras = tomllib.loads((modal_app.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"gpu", "train", "train-gpu"} <= set(installed) <= set(extras)


# ## The dispatcher


class FakeCall:
    def __init__(self, where: str, doc: dict[str, Any]):
        self.where, self.doc = where, doc
        self.object_id = f"fc-{where}-{doc['job']['id']}-{doc['shard']}"
        self.cancelled = False
        self.cancel = SimpleNamespace(aio=self._cancel)

    async def _cancel(self) -> None:
        self.cancelled = True


class FakeModal:
    """What `modal.Cls.from_name(app, "LLMJobs")` and `modal.Function.from_name(app, "train")` give, for the
    calls the dispatcher makes: each spawn is recorded."""

    def __init__(self):
        self.calls: list[FakeCall] = []

        def spawner(where: str) -> SimpleNamespace:
            async def spawn(doc):
                self.calls.append(FakeCall(where, doc))
                return self.calls[-1]

            return SimpleNamespace(aio=spawn)

        run = SimpleNamespace(run=SimpleNamespace(spawn=spawner("run")))
        self.cls = lambda: run
        self.train = SimpleNamespace(spawn=spawner("train"))


async def test_a_training_job_is_spawned_on_train_and_others_on_llmjobs_run():
    modal = FakeModal()
    dispatcher = ModalDispatcher(modal.cls, modal.train)
    job = training_job(3, id="tune")
    await dispatcher.submit(plan_shards(job, job.total, 2))  # one shard however small SHARD_SIZE is
    batch = make_job(5, id="batch")
    await dispatcher.submit(plan_shards(batch, batch.total, 2))
    assert [(c.where, c.doc["job"]["id"], c.doc["shard"]) for c in modal.calls] == [
        ("train", "tune", 0), ("run", "batch", 0), ("run", "batch", 1), ("run", "batch", 2)]
    assert modal.calls[0].doc["job"]["training"]["adapter"] == "my-adapter"

    # cancel reaches every call of its job, whichever function runs it
    assert await dispatcher.cancel("tune") is True
    assert [c.cancelled for c in modal.calls] == [True, False, False, False]
    assert await dispatcher.cancel("batch") is True
    assert all(c.cancelled for c in modal.calls)
    assert await dispatcher.cancel("never-sent") is False


def test_make_dispatcher_looks_up_the_class_and_the_train_function(tmp_path):
    import modal

    settings = Settings(_env_file=None, dispatcher="modal", sqlite_path=tmp_path / "j.db")
    dispatcher = make_dispatcher(settings, store=None)  # lazy handles: nothing is looked up yet
    assert isinstance(dispatcher, ModalDispatcher)
    assert isinstance(dispatcher._cls, modal.Cls) and isinstance(dispatcher._train, modal.Function)
    assert isinstance(modal_app._spawner()._train, modal.Function)


# ## The function's body, with a stand-in trainer


class FakeTrainer:
    """Trainer's shape: TrainEvents (a checkpoint among them), then one FinalEvent with `outcome`."""

    def __init__(self, outcome: Outcome = Outcome.completed, *, seen: list[str] | None = None):
        self.outcome = outcome
        self.seen = seen if seen is not None else []
        self.runs: list[Job | ShardRef] = []

    async def run(self, work: Job | ShardRef, store: Any, **_: Any) -> AsyncIterator[Event]:
        self.runs.append(work)
        job_id = work.job_id
        for step, phase in ((1, "train"), (2, "checkpoint"), (3, "train"), (4, "checkpoint")):
            await asyncio.sleep(0)
            self.seen.append(f"{phase} {step}")
            yield TrainEvent(job_id=job_id, phase=phase, step=step, max_steps=4, loss=1.0)
        await record_outcome(store, job_id, self.outcome, Summary.empty(work.total, self.outcome.value),
                             retry_s=1)
        self.seen.append("final")
        yield FinalEvent(job_id=job_id, outcome=self.outcome, summary=Summary.empty(work.total, "reason"))


def volume(seen: list[str], what: str):
    async def call() -> None:
        seen.append(what)

    return call


async def test_train_commits_after_each_checkpoint_and_at_the_end(store, tmp_path):
    job = training_job(3, id="tune-ok")
    await store.accept(job)
    (ref,) = plan_shards(job, job.total, 1000)
    seen: list[str] = []
    trainer = FakeTrainer(seen=seen)
    final = await train_to_end(Settings(_env_file=None), ref.wire(), trainer=trainer, store=store,
                               commit=volume(seen, "commit"), reload=volume(seen, "reload"))
    assert final["type"] == "final" and final["outcome"] == "completed"
    assert seen[0] == "reload"  # a warm container sees what another one committed first
    # each checkpoint's commit runs in the background, in order; the last one after the final event
    assert seen.count("commit") == 3 and seen[-1] == "commit"
    assert seen.index("commit") > seen.index("checkpoint 2")
    assert [w.job_id for w in trainer.runs] == ["tune-ok"]


async def test_a_failed_training_raises_so_modal_retries_and_still_commits(store):
    job = training_job(2, id="tune-bad")
    await store.accept(job)
    seen: list[str] = []
    with pytest.raises(JobFailed, match="tune-bad failed"):
        await train_to_end(Settings(_env_file=None), plan_shards(job, 2, 1000)[0].wire(),
                           trainer=FakeTrainer(Outcome.failed, seen=seen), store=store, commit=volume(seen, "commit"))
    assert seen[-1] == "commit"


async def test_a_commit_that_fails_is_logged_and_training_goes_on(store, caplog):
    job = training_job(2, id="tune-flaky")
    await store.accept(job)

    async def broken() -> None:
        raise RuntimeError("volume busy")

    final = await train_to_end(Settings(_env_file=None), plan_shards(job, 2, 1000)[0].wire(),
                               trainer=FakeTrainer(), store=store, commit=broken)
    assert final["outcome"] == "completed"
    assert "could not commit the training volume" in caplog.text


async def test_train_takes_a_whole_training_job_named_after_its_call(store):
    trainer = FakeTrainer()
    doc = training_job(2).wire()
    doc.pop("id", None)
    final = await train_to_end(Settings(_env_file=None), doc, default_id="fc-123", trainer=trainer, store=store)
    assert final["job_id"] == "fc-123" and isinstance(trainer.runs[0], Job)


async def test_train_refuses_an_inference_job_without_a_retry(store):
    job = make_job(2, id="not-training")
    await store.accept(job)
    trainer = FakeTrainer()
    final = await train_to_end(Settings(_env_file=None), plan_shards(job, 2, 1000)[0].wire(), trainer=trainer,
                               store=store)
    assert final["outcome"] == "failed" and "not a training job" in final["summary"]["reason"]
    assert trainer.runs == []  # returned, not raised: a retry could not help
    record = await store.get_job("not-training")
    assert record.status == JobStatus.failed


def test_local_runs_have_no_volume_to_commit():
    assert modal_app._in_container(modal_app.training.commit) is None  # .local(): tests, a laptop


# ## The inference class refuses training jobs, once


async def test_llmjobs_run_returns_a_refusal_for_a_training_job(store):
    service = JobService(FakeEngine(), Settings(_env_file=None, train_jobs=False), store=store)
    job = training_job(2, id="tune-on-llmjobs")
    await store.accept(job)
    final = await run_to_end(service, plan_shards(job, 2, 1000)[0].wire())  # returned: Modal does not retry
    assert final["outcome"] == "failed" and "`train` function" in final["summary"]["reason"]
    assert (await store.get_job("tune-on-llmjobs")).status == JobStatus.failed


# ## The queue's train lane: the Cron wakes `drain_train` for it, and only for it


def test_drain_train_trains_on_the_training_gpu_with_no_retries_of_its_own():
    info = modal_app.drain_train.info()
    assert info.gpus == modal_app.train.info().gpus and info.timeout == modal_app.TRAIN_TIMEOUT_S
    assert {path: (v.name, v.read_only) for path, v in info.volumes.items()} == {
        path: (v.name, v.read_only) for path, v in modal_app.train.info().volumes.items()}
    assert not info.max_retries  # the queue retries its jobs (leases, attempts, dead letters)
    assert info.schedule is None and modal_app.drain_queue.info().schedule.startswith("Cron(")


@pytest.fixture
async def queue_env(redis_server, upstash, monkeypatch, tmp_path):
    """Settings that reach the test's queue, and that queue."""
    redis_server.flush()
    q = make_queue(upstash)
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", upstash.url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", UPSTASH_TOKEN)
    settings = Settings(_env_file=None, sqlite_path=tmp_path / "jobs.db", store_retry_s=2)
    yield settings, q
    await q.close()


class Spawns:
    """The Cron's Modal calls, recorded: spawns, and how many drain_train calls wait for a container."""

    def __init__(self, backlog: int = 0):
        self.spawned: list[str] = []
        self.backlog = backlog

    def spawn(self, what: str):
        async def call() -> str:
            self.spawned.append(what)
            return f"fc-{what}"

        return call

    async def train_backlog(self) -> int:
        return self.backlog

    def check(self, settings):
        from handler.platforms.modal import check_queue

        return check_queue(settings, drain=self.spawn("drain"), drain_train=self.spawn("drain_train"),
                           train_backlog=self.train_backlog)


async def test_the_cron_wakes_a_training_gpu_for_training_jobs_and_vllm_for_the_rest(queue_env):
    settings, q = queue_env
    cron = Spawns()
    assert await cron.check(settings) == {"queued": 0, "drained": False} and cron.spawned == []

    (ref,) = plan_shards(training_job(2, id="queued-tune"), 2, 1000)
    await q.enqueue(ref, "train")
    assert await queued_jobs(settings) == 0  # training jobs alone never boot vLLM
    assert await cron.check(settings) == {"queued": 0, "drained": False, "queued_train": 1,
                                          "train_call_id": "fc-drain_train"}
    busy = Spawns(backlog=1)  # a drain_train call already waits for a container: it will take the job
    assert "train_call_id" not in await busy.check(settings) and busy.spawned == []

    await q.enqueue(make_job(2, id="queued-batch"))
    both = Spawns()
    out = await both.check(settings)
    assert out["queued"] == 1 and out["drained"] and out["queued_train"] == 1
    assert both.spawned == ["drain", "drain_train"]


async def test_the_cron_hands_back_a_training_job_whose_container_died(queue_env):
    settings, q = queue_env
    (ref,) = plan_shards(training_job(2, id="orphan-tune"), 2, 1000)
    await q.enqueue(ref, "train")
    assert await q.reserve("dead-container", 1.0, lanes=("train",)) is not None  # then its container died
    assert await Spawns().check(settings) == {"queued": 0, "drained": False}  # running, for all it knows
    await asyncio.sleep(1.5)  # the lease expired; no worker runs to reap it: the Cron does
    cron = Spawns()
    assert (await cron.check(settings))["queued_train"] == 1 and cron.spawned == ["drain_train"]


async def test_drain_train_takes_the_train_lane_only_and_commits(queue_env, store):
    from handler.platforms.modal import drain_train_lane

    settings, q = queue_env
    tune = training_job(2, id="lane-tune")
    await store.accept(tune)
    (ref,) = plan_shards(tune, 2, 1000)
    await q.enqueue(ref, "train")
    await q.enqueue(make_job(2, id="lane-batch"))
    seen: list[str] = []
    trainer = FakeTrainer(seen=seen)
    drain = asyncio.create_task(drain_train_lane(settings, trainer=trainer, store=store,
                                                 commit=volume(seen, "commit"), reload=volume(seen, "reload")))
    deadline = asyncio.get_running_loop().time() + 20
    while (await store.get_job("lane-tune")).status != JobStatus.completed:
        assert asyncio.get_running_loop().time() < deadline and not drain.done()
        await asyncio.sleep(0.05)
    assert (await q.stats())["queued_default"] == 1  # the inference job waits for LLMJobs.drain
    # a draining worker stops once the queue has nothing left (handler/worker.py `_queue_empty`): take the
    # inference job away, so that holds however it counts the lanes it does not take
    await q.cancel("lane-batch")
    stats = await asyncio.wait_for(drain, 30)
    assert stats["done"] == 1 and stats["failed"] == 0
    assert [w.job_id for w in trainer.runs] == ["lane-tune"]
    assert seen[0] == "reload" and seen.count("commit") == 3 and seen[-1] == "commit"
