"""RunPod serverless entrypoint (wiring only; the logic is in handler/platforms/runpod.py).

    python runpod_worker.py

boots vLLM once for this worker process, before the first job is taken, then hands the
runpod SDK an async generator handler. Several jobs share the one engine
(`concurrency_modifier`, JOBS_PER_WORKER), and `return_aggregate_stream` makes `/status`
and `/runsync` return every streamed event once a request ends. A request from our dispatcher is
one shard of a staged job: its events carry progress, not results (the worker never holds a big
job's results), and its results are in the store.
"""

from __future__ import annotations

import logging

import runpod

from handler.health import HealthBeat
from handler.logs import quiet_spawned_process, setup_logging
from handler.platforms.runpod import RunpodHandler, set_sdk_log_level
from handler.service import JobService
from shared.contracts.settings import get_settings

log = logging.getLogger("llm_jobs.runpod")
# vLLM's engine core is a spawned process, which imports this module before vLLM (handler/logs.py)
quiet_spawned_process()


def config(handler: RunpodHandler) -> dict:
    """What `runpod.serverless.start` gets."""
    return {
        "handler": handler.handle,
        "return_aggregate_stream": True,
        "concurrency_modifier": handler.concurrency,
    }


def main() -> None:
    settings = get_settings()
    setup_logging(settings)
    set_sdk_log_level(settings.log_level)
    # Boot before the SDK's loop starts: the engine attaches to that loop on its first request.
    service = JobService.boot(settings)
    engine = service.engine  # None on a training endpoint (INFERENCE_JOBS=false): no vLLM, the GPU is the trainer's
    log.info("llm-jobs worker ready (%s); taking up to %d job(s) at once",
             engine.model_name if engine is not None else "training only", settings.jobs_per_worker)
    HealthBeat(settings.health_file, lambda: engine is None or engine.alive).start()
    runpod.serverless.start(config(RunpodHandler(service)))


if __name__ == "__main__":
    main()
