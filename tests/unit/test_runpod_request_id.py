"""The RunPod handler keeps RunPod's request id in the store, so any API replica can cancel the run
(issue 11, finding 9: even one whose own `/run` lost its answer)."""

from __future__ import annotations

from runpod.serverless.modules.rp_job import run_job_generator

from handler.platforms.runpod import RunpodHandler
from handler.service import JobService
from shared.contracts.models import Job
from shared.contracts.settings import Settings
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine


async def test_the_handler_keeps_runpods_request_id_for_the_job(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    job = Job(id="ours-1", items=[{"custom_id": "a", "prompt": "hi"}])
    await store.accept(job)  # the API accepted it; its /run answer was lost, so no id was kept
    service = JobService(FakeEngine(), Settings(_env_file=None), store=store)
    outs = [o async for o in run_job_generator(RunpodHandler(service).handle,
                                               {"id": "rp-req-7", "input": job.wire()})]
    assert outs[-1]["output"]["type"] == "final"
    assert await store.get_dispatch_ref("ours-1") == "rp-req-7"
    await service.close()


async def test_a_training_jobs_request_id_is_kept_for_the_training_endpoint(tmp_path):
    # `train:<id>`: the API's dispatcher sends its /cancel to the training endpoint (shared/server/dispatch.py)
    from shared.contracts.shards import plan_shards
    from shared.contracts.training import TrainConfig

    store = SQLiteStore(tmp_path / "jobs.db")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    job = Job(id="tune-1", items=[{"custom_id": "train-0", "messages": chat}], training=TrainConfig(adapter="a"))
    await store.accept(job)
    (ref,) = plan_shards(job, job.total, 1000)
    # an inference worker: it refuses the job (failed), after keeping the id, so /cancel still finds it
    service = JobService(FakeEngine(), Settings(_env_file=None, train_jobs=False), store=store)
    outs = [o async for o in run_job_generator(RunpodHandler(service).handle, {"id": "rp-req-8", "input": ref.wire()})]
    assert "does not run training jobs" in str(outs[-1])
    assert await store.get_dispatch_ref("tune-1") == "train:rp-req-8"
    await service.close()
