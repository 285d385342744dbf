"""A training job survives its worker's death (issue 16): SIGKILL mid-training, the queue redelivers the job
once the lease expires, and the next worker resumes from the last checkpoint: the step count continues.

Real parts: `llm-jobs worker --train-only` processes, the real queue (upstash-redis -> the REST adapter ->
redis-server), PostgreSQL, trl and peft on the embedded SmolLM2-135M."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from shared.contracts.events import TrainEvent
from shared.contracts.inputs import parse_job_document
from shared.contracts.models import JobStatus
from shared.contracts.training import TrainReport
from shared.sdk._training import training_document
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.postgres import PostgresStore
from tests.conftest import make_queue
from tests.integration.test_api import api_settings
from tests.integration.test_training import prepared  # noqa: F401 (the prepared data fixture)
from tests.integration.test_worker_faults import start_worker, worker_env

STEPS, SAVE = 16, 4


async def test_sigkill_mid_training_then_redelivery_resumes_from_the_checkpoint(prepared, pg, upstash,  # noqa: F811
                                                                               redis_server, tmp_path):
    redis_server.flush()
    settings = api_settings(pg, upstash, training_dir=tmp_path / "training")
    store = PostgresStore(pg.url)
    jobs = JobLifecycle(store, QueueDispatcher(make_queue(upstash)), settings)
    doc = training_document(prepared, adapter="resumed", id="train-kill", max_steps=STEPS, save_steps=SAVE,
                            logging_steps=1, batch_size=4, learning_rate=1e-3, merge=False)
    await jobs.submit(parse_job_document(doc))
    env = worker_env(pg, upstash, LEASE_S=6, TRAINING_DIR=tmp_path / "training")

    first = start_worker(env, "--train-only", "--worker-id", "doomed")
    seen: list[TrainEvent] = []
    deadline = time.monotonic() + 600
    async for ev in jobs.follow("train-kill"):  # until a checkpoint is saved and training has gone past it
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no progress"
        if isinstance(ev.event, TrainEvent):
            seen.append(ev.event)
            if ev.event.phase == "train" and ev.event.step >= SAVE + 2:
                break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = seen[-1].step
    assert (await jobs.get("train-kill")).status is JobStatus.running  # still leased to the dead worker

    second = start_worker(env, "--train-only", "--worker-id", "rescuer")  # it reaps the lease once it expires
    deadline = time.monotonic() + 900
    while not (record := await jobs.get("train-kill")).status.terminal:
        assert second.poll() is None, second.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the job was not finished after its redelivery"
        await asyncio.sleep(0.5)
    second.send_signal(signal.SIGTERM)
    out, _ = await asyncio.to_thread(second.communicate, timeout=120)
    assert second.returncode == 0, out[-3000:]
    assert record.status is JobStatus.completed, record.summary
    report = TrainReport.model_validate(record.summary.training)
    assert report.steps == STEPS and report.resumed_from is not None
    assert SAVE <= report.resumed_from <= killed_at and report.resumed_from % SAVE == 0

    after: list[TrainEvent] = []  # the second run's events, from the queue's stream of the job
    resumed = False
    async for ev in jobs.follow("train-kill"):
        if isinstance(ev.event, TrainEvent):
            resumed = resumed or ev.event.phase == "resume"
            if resumed:
                after.append(ev.event)
    assert after and after[0].phase == "resume" and after[0].step == report.resumed_from
    steps = [e.step for e in after if e.phase == "train"]
    assert steps == list(range(report.resumed_from + 1, STEPS + 1)), steps  # continues; never restarts at 1
    assert "job=train-kill worker=rescuer attempt=2" in out
    print(f"\nresume: killed at step {killed_at}, resumed from checkpoint-{report.resumed_from}, finished at "
          f"step {report.steps}; loss {report.losses[0][1]:.3f} -> {report.losses[-1][1]:.3f}")
    await jobs.close()
