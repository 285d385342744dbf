"""RunPod serverless entrypoint (wiring only; the logic is in handler/platforms/runpod.py).

    python runpod_worker.py

boots vLLM once for this worker process, before the first job is taken, then hands the
runpod SDK an async generator handler. Several jobs share the one engine
(`concurrency_modifier`, JOBS_PER_WORKER), and `return_aggregate_stream` makes `/status`
and `/runsync` return every streamed event once a job ends.
"""

from __future__ import annotations

import logging

import runpod

from handler.health import HealthBeat
from handler.platforms.runpod import RunpodHandler, set_sdk_log_level
from handler.service import JobService
from shared.cli.common import setup_logging
from shared.settings import get_settings

log = logging.getLogger("llm_jobs.runpod")

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
    log.info("llm-jobs worker ready (%s); taking up to %d job(s) at once", service.engine.model_name,
             settings.jobs_per_worker)
    HealthBeat(settings.health_file, lambda: service.alive).start()
    runpod.serverless.start(config(RunpodHandler(service)))


if __name__ == "__main__":
    main()
