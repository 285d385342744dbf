"""`llm-jobs serve-runpod`: RunPod's HTTP contract on loopback, running the real handler."""

from __future__ import annotations

from typing import Annotated

import typer

from shared.cli.common import err, setup_logging
from shared.settings import get_settings


def serve_runpod(
    host: Annotated[str, typer.Option(help="Interface to bind; keep loopback (there is no auth).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Boot the engine, then serve /run, /runsync, /stream, /status, /cancel and /health."""
    import uvicorn

    from handler.platforms.runpod import RunpodHandler, set_sdk_log_level
    from handler.service import JobService
    from shared.runpod_harness import create_harness_app

    settings = get_settings()
    setup_logging(settings)
    set_sdk_log_level(settings.log_level)
    with err.status(f"booting the engine ({settings.model_name or 'embedded SmolLM2-135M-Instruct'})..."):
        service = JobService.boot(settings)  # before the server's loop: the engine attaches to it on first use
    handler = RunpodHandler(service)
    app = create_harness_app(handler.handle, concurrency_modifier=handler.concurrency)
    err.print(f"RunPod harness on http://{host}:{port} (also /v2/<any-endpoint-id>/...); "
              f"{handler.concurrency(1)} job(s) at once; results to the configured store")
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower())
