"""The `llm-jobs` command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from handler.logs import quiet_spawned_process
from shared.cli.adapters import adapters_app
from shared.cli.common import EXIT_INVALID_INPUT, err
from shared.cli.data import data_app
from shared.cli.evals import eval_app
from shared.cli.keys import keys_app
from shared.cli.plan import plan
from shared.cli.queue_cmds import queue_app, submit, watch, worker
from shared.cli.read import results, status
from shared.cli.run import run
from shared.cli.schedules import schedule_app
from shared.cli.serve import openapi, serve, serve_runpod
from shared.cli.train import train_app
from shared.cli.validate import validate
from shared.contracts.settings import get_settings

app = typer.Typer(
    name="llm-jobs",
    help="Run batch LLM jobs: streamed, chunked results on vLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log at DEBUG, with the engine's own output "
                                          "(vLLM, torch, warnings); the same as LOG_LEVEL=DEBUG.")] = False,
) -> None:
    if verbose:
        # every command reads this one Settings (get_settings() is cached)
        get_settings().log_level = "DEBUG"


app.command(help="Run a job file through the engine and write every result.")(run)
app.command(help="Check a job file without running it.")(validate)
app.command(help="Plan a job: which GPU and platform, how long it takes, what it costs.")(plan)
app.command(help="Show a job's status and counters from the store.")(status)
app.command(help="Print or save a job's stored results.")(results)
app.command(help="Validate a job and put it on the queue; prints its id.")(submit)
app.command(help="Follow a queued job's progress until it ends.")(watch)
app.command(help="Run jobs from the queue on one engine.")(worker)
app.command(help="Run the HTTP API for the frontend and the SDK.")(serve)
app.command("serve-runpod", help="Serve RunPod's HTTP contract locally, running the real handler.")(serve_runpod)
app.command(help="Write the API's OpenAPI document (openapi.json).")(openapi)
app.add_typer(queue_app, name="queue")
app.add_typer(keys_app, name="keys")
app.add_typer(eval_app, name="eval")
app.add_typer(schedule_app, name="schedule")
app.add_typer(adapters_app, name="adapters")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")


def main() -> None:
    try:
        sys.exit(app())
    except ValidationError as e:
        if e.title != "Settings":
            raise
        # a setting that cannot work (pydantic-settings names it; the value is never shown)
        err.print(f"[bold red]configuration error:[/] {e}")
        sys.exit(EXIT_INVALID_INPUT)


# vLLM's engine core is a spawned process, which imports the `llm-jobs` script, hence this module,
# before vLLM: quiet what vLLM logs while it is imported there (see handler/logs.py)
quiet_spawned_process()
