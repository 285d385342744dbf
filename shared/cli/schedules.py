"""`llm-jobs schedule add | list | rm | tick`: scheduled eval runs (shared/server/scheduler.py).

A schedule runs a suite kept in the store on a cron expression (five fields, UTC). Every
`llm-jobs worker` ticks (SCHEDULE_TICK_S) and Modal's Cron does too: each slot makes one run,
however many tick.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, EXIT_JOB_FAILED, err, on_store
from shared.cli.evals import read_suite
from shared.contracts.errors import LLMJobsError
from shared.contracts.models import ID_PATTERN
from shared.contracts.settings import get_settings
from shared.evals.records import ScheduleRecord
from shared.evals.schedule import cron_problem
from shared.stores import Store

schedule_app = typer.Typer(help="Scheduled eval runs: a suite, a model and a cron expression (UTC).",
                           no_args_is_help=True)
out = Console()




@schedule_app.command("add")
def add(
    suite_file: Annotated[Path, typer.Argument(metavar="SUITE", help="The suite (YAML or JSON): kept in the store, "
                                               "so the schedule runs the version it holds.", exists=True,
                                               dir_okay=False)],
    cron: Annotated[str, typer.Option(help="When, as a cron expression in UTC, e.g. '0 3 * * *' (03:00 nightly).")],
    model: Annotated[str | None, typer.Option(help="The model to run it on [default: the suite's].")] = None,
    schedule_id: Annotated[str | None, typer.Option("--id", help="The schedule's id [default: <suite>-nightly "
                                                    "style, from the suite's id].")] = None,
    disabled: Annotated[bool, typer.Option(help="Add it switched off.")] = False,
) -> None:
    """Run SUITE on a schedule."""
    from handler.evals import keep_suite

    if problem := cron_problem(cron):
        err.print(f"[bold red]error:[/] --cron: {problem}")
        raise typer.Exit(EXIT_INVALID_INPUT)
    settings = get_settings()
    suite = read_suite(suite_file, settings, any_model=bool(model))
    sid = schedule_id or f"{suite.id[:100]}-schedule"
    if not re.match(ID_PATTERN, sid):
        err.print(f"[bold red]error:[/] --id {sid[:40]!r}: letters, digits and . _ : -, up to 128")
        raise typer.Exit(EXIT_INVALID_INPUT)

    async def go(store: Store) -> None:
        rec, _ = await keep_suite(store, suite, None)
        await store.add_schedule(ScheduleRecord(id=sid, suite_id=rec.id, model=model, cron=cron, enabled=not disabled))

    on_store(go)
    err.print(f"schedule [bold]{sid}[/]: suite {suite.id} at '{cron}' (UTC)" + (" [yellow](disabled)[/]"
                                                                                  if disabled else ""))


@schedule_app.command("list")
def list_schedules() -> None:
    """Every schedule, with the last slot it ran."""
    found = on_store(lambda store: store.list_schedules())
    table = Table("id", "suite", "model", "cron (UTC)", "enabled", "last slot", "owner")
    for s in found:
        table.add_row(s.id, s.suite_id, s.model or "(suite's)", s.cron, "yes" if s.enabled else "no",
                      f"{s.last_slot:%Y-%m-%d %H:%M}" if s.last_slot else "", s.owner or "")
    out.print(table)


@schedule_app.command("rm")
def remove(schedule_id: Annotated[str, typer.Argument(help="The schedule's id.")]) -> None:
    """Remove a schedule (its runs stay)."""
    if not on_store(lambda store: store.remove_schedule(schedule_id)):
        err.print(f"[bold red]error:[/] no schedule {schedule_id!r}")
        raise typer.Exit(EXIT_INVALID_INPUT)
    err.print(f"removed schedule {schedule_id}")


@schedule_app.command("tick")
def tick_now() -> None:
    """Tick once now: submit every due slot's run to the queue (what workers and Modal's Cron do)."""
    from shared.server.scheduler import tick_once

    try:
        runs = asyncio.run(tick_once(get_settings()))
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e
    for r in runs:
        err.print(f"submitted run [bold]{r.id}[/] (schedule {r.schedule_id}, slot {r.slot:%Y-%m-%d %H:%M} UTC)")
    if not runs:
        err.print("nothing due")
