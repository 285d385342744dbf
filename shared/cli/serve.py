"""`llm-jobs serve-runpod`: RunPod's HTTP contract on loopback, running the real handler."""

from __future__ import annotations

from typing import Annotated

import typer

from shared.cli.common import err, setup_logging
from shared.contracts.settings import Settings, get_settings


def _log_config(settings: Settings) -> dict | None:
    """uvicorn's own handlers write plain lines; with LOG_FORMAT=json it gets none, and its records go up to the
    root's JSON handler (handler/logs.py)."""
    import uvicorn.config

    return None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG


def serve_runpod(
    host: Annotated[str, typer.Option(help="Interface to bind; keep loopback (there is no auth).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Boot the engine, then serve /run, /runsync, /stream, /status, /cancel, /health and /metrics."""
    import uvicorn

    from handler.platforms.runpod import RunpodHandler, set_sdk_log_level
    from handler.platforms.runpod_harness import create_harness_app
    from handler.service import JobService

    settings = get_settings()
    setup_logging(settings)
    set_sdk_log_level(settings.log_level)
    with err.status(f"booting the engine ({settings.model_name or 'embedded SmolLM2-135M-Instruct'})..."):
        service = JobService.boot(settings)  # before the server's loop: the engine attaches to it on first use
    handler = RunpodHandler(service)
    app = create_harness_app(handler.handle, concurrency_modifier=handler.concurrency)
    err.print(f"RunPod harness on http://{host}:{port} (also /v2/<any-endpoint-id>/...); "
              f"{handler.concurrency(1)} job(s) at once; results to the configured store")
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), log_config=_log_config(settings))


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
) -> None:
    """Run the HTTP API (jobs go to DISPATCHER: queue, runpod, modal or local)."""
    import uvicorn

    from shared.server.api import create_app

    settings = get_settings()
    setup_logging(settings)
    if not settings.credentials_required and host not in ("127.0.0.1", "localhost", "::1"):
        err.print("[bold red]error:[/] refusing to serve on a public interface with no API_KEYS (or "
                  "SUPABASE_JWT_SECRET / SUPABASE_JWKS_URL) set")
        raise typer.Exit(2)
    if not settings.credentials_required:
        err.print("[yellow]no API_KEYS set: the API is open (fine on loopback only)[/]")
    err.print(f"llm-jobs API on http://{host}:{port} (dispatcher: {settings.dispatcher}; docs at /docs)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower(),
                log_config=_log_config(settings))


def openapi(
    output: Annotated[str, typer.Option("-o", "--output", help="Where to write it ('-' for stdout).")] = "openapi.json",
) -> None:
    """Write the API's OpenAPI document (commit it: a TypeScript client is generated from it)."""
    import json

    from shared.server.api.app import openapi_document

    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
    if output == "-":
        print(text, end="")
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        err.print(f"wrote {output}")
