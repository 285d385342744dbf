"""The `llm-jobs` command line."""

from __future__ import annotations

import sys

import typer

from shared.cli.run import run
from shared.cli.validate import validate

app = typer.Typer(
    name="llm-jobs",
    help="Run batch LLM jobs: streamed, chunked results on vLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(help="Run a job file through the engine and write every result.")(run)
app.command(help="Check a job file without running it.")(validate)


def main() -> None:
    sys.exit(app())
