"""`llm-jobs eval run | history | report`: run an eval suite on the engine here, score it, compare it with a
baseline, list a suite's runs, and write a run's report (one HTML file).

`eval run` exits 0 when the run has no regression against its baseline, 4 when it has one (for CI),
2 for a suite that cannot run (every problem listed, with its case, field and line), 1 when the
job itself failed. The same `--run-id` resumes a run: stored results are not run again, and no case
is scored twice (handler/evals.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    EXIT_JOB_FAILED,
    err,
    on_store,
    served_models,
    setup_logging,
)
from shared.cli.common import show_issues as _show_issues
from shared.contracts.errors import InputError, LLMJobsError, StoreError
from shared.contracts.events import ChunkEvent, ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import JobStatus, Summary
from shared.contracts.owners import scoped_id
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings, get_settings
from shared.evals.regress import Regressions
from shared.evals.report import render_report
from shared.evals.scoring import RunScores
from shared.evals.suite import Suite, parse_suite
from shared.stores import describe_store, open_store

#: `eval run` found a regression against its baseline
EXIT_REGRESSION = 4

eval_app = typer.Typer(help="Run eval suites, compare runs, and list a suite's history.", no_args_is_help=True)
out = Console()


def read_suite(path: Path, settings: Settings, *, any_model: bool) -> Suite:
    """The suite, or exit 2 with every problem listed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        err.print(f"[bold red]error:[/] {path}: {e}")
        raise typer.Exit(EXIT_INVALID_INPUT) from e
    try:
        return parse_suite(text, limits=Limits.from_settings(settings), served_models=served_models(settings),
                           any_model=any_model)
    except InputError as e:
        _show_issues(f"{path}: not a valid suite, nothing was run", [(i.where() or "suite", i.message)
                                                                    for i in e.issues])
        raise typer.Exit(EXIT_INVALID_INPUT) from e


def git_revision() -> str | None:
    """The working directory's git revision, when it is a repository (else None)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = done.stdout.strip()
    return rev if done.returncode == 0 and rev else None


@eval_app.command("run")
def run(
    suite_file: Annotated[Path, typer.Argument(metavar="SUITE", help="The suite: YAML or JSON.", exists=True,
                                               dir_okay=False)],
    model: Annotated[str | None, typer.Option(help="Model to serve (HF id or path) [default: the suite's, or the "
                                                   "embedded one].")] = None,
    baseline: Annotated[str | None, typer.Option(help="A run to compare a new run with: its id, or 'last' (the "
                                                      "suite's newest finished run).")] = None,
    run_id: Annotated[str | None, typer.Option(help="The run's id: the same id resumes it [default: new].")] = None,
    git_rev: Annotated[str | None, typer.Option(help="The code revision to record [default: git rev-parse "
                                                     "HEAD, when in a repository].")] = None,
) -> None:
    """Run SUITE's cases on the engine, score them as they come, then show the scores and any regression."""
    from handler.evals import EvalHook, open_run  # the engine's layer: loaded when a run starts

    settings = get_settings()
    if model:
        settings = settings.model_copy(update={"model_name": model})
    setup_logging(settings)
    suite = read_suite(suite_file, settings, any_model=bool(model))

    async def go() -> tuple[FinalEvent, RunScores, Regressions | None, str]:
        from handler.engine.vllm_engine import VLLMEngine
        from handler.runner import run_job

        store = open_store(settings)
        try:
            run_rec, job = await open_run(store, suite, model=model, baseline=baseline, run_id=run_id,
                                          git_rev=git_rev or git_revision())
            err.print(f"eval run [bold]{run_rec.id}[/]: suite {suite.id} version {run_rec.version}, "
                      f"{len(suite.cases)} case(s); stored in {describe_store(settings)}"
                      + (f"; baseline {run_rec.baseline}" if run_rec.baseline else ""))
            hook = await EvalHook.for_work(store, job, retry_s=settings.store_retry_s)  # the run's own version
            if hook is None:
                raise StoreError(f"eval run {run_rec.id}: the store did not give it back")
            record = await store.get_job(job.id)
            if record is not None and record.status is JobStatus.completed:  # nothing to run: score and report
                err.print("its job has completed already: scoring what is stored")
                final = FinalEvent(job_id=job.id, outcome=Outcome.completed,
                                   summary=record.summary or Summary.empty(record.total))
            else:
                with err.status(f"booting the engine ({settings.model_name or 'embedded SmolLM2-135M-Instruct'})..."):
                    engine = await VLLMEngine.start(settings)
                hook.engine = engine  # the judges (llm_rubric) and perplexities run on it
                try:
                    await hook.begin()
                    final = await _drive(run_job(job, engine, store=store, limits=Limits.from_settings(settings),
                                                 any_model=bool(model), chunk_size=settings.default_chunk_size,
                                                 chunk_interval_s=settings.default_chunk_interval_s,
                                                 store_retry_s=settings.store_retry_s, on_stored=hook.scored),
                                         job.id, job.total)
                finally:
                    await engine.close()
            summary, regressions = await hook.finish(final.outcome)
            return final, summary, regressions, run_rec.id
        finally:
            await store.close()

    try:
        final, summary, regressions, stored_id = asyncio.run(go())
    except KeyboardInterrupt:
        err.print("[yellow]interrupted; run it again with the same --run-id to resume[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except InputError as e:
        _show_issues("cannot run", [(i.where() or "run", i.message) for i in e.issues])
        raise typer.Exit(EXIT_INVALID_INPUT) from e
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e
    show_scores(stored_id, summary)
    show_regressions(regressions)
    if final.outcome is not Outcome.completed:
        err.print(f"[bold red]the run's job ended {final.outcome.value}[/]: {final.summary.reason or ''}")
        raise typer.Exit(EXIT_JOB_FAILED)
    if regressions is not None and regressions.any:
        raise typer.Exit(EXIT_REGRESSION)


async def _drive(events, job_id: str, total: int) -> FinalEvent:
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[rate]:.2f} items/s"),
                   TimeElapsedColumn(), console=err)
    final: FinalEvent | None = None
    with bar:
        task = bar.add_task(job_id, total=total, failed=0, rate=0.0)
        async for event in events:
            match event:
                case ChunkEvent(progress=p):
                    bar.update(task, completed=p.completed + p.failed, failed=p.failed, rate=p.items_per_s)
                case ErrorEvent(error=message):
                    err.print(f"[bold red]error:[/] {message}")
                case FinalEvent():
                    final = event
    assert final is not None
    return final


def show_scores(run_id: str, s: RunScores) -> None:
    table = Table(title=f"eval run {run_id}: {s.passed}/{s.cases} cases passed ({s.pass_rate:.1%})")
    for col in ("assertion", "n", "pass rate", "mean score", "mean value", "threshold"):
        table.add_column(col, justify="left" if col == "assertion" else "right")
    for name, m in s.metrics.items():
        table.add_row(name, str(m.n), f"{m.pass_rate:.1%}", f"{m.mean_score:.3f}",
                      "" if m.mean_value is None else f"{m.mean_value:.3f}",
                      "" if m.threshold is None else f"{m.threshold:g}")
    out.print(table)
    a = s.agreement
    if a is not None:
        grading = Table(title="grading agreement")
        for col in ("cases", "labelled", "exact", "within 1", "MAE", "quadratic weighted kappa"):
            grading.add_column(col, justify="right")
        grading.add_row(str(a.cases), f"{a.labelled} ({a.coverage:.0%})", f"{a.exact:.1%}", f"{a.within_1:.1%}",
                        "" if a.mae is None else f"{a.mae:.2f}", "" if a.qwk is None else f"{a.qwk:.3f}")
        out.print(grading)


def show_regressions(r: Regressions | None) -> None:
    if r is None:
        out.print("no baseline: nothing to compare with")
        return
    if not r.any:
        out.print("[green]no regression against the baseline[/]")
        return
    table = Table(title="regressions against the baseline", title_style="bold red")
    table.add_column("what")
    table.add_column("baseline", justify="right")
    table.add_column("now", justify="right")
    table.add_column("why")
    for case in r.cases:
        table.add_row(f"case {case}", "pass", "fail", "passed in the baseline, fails now")
    for m in r.metrics:
        table.add_row(m.metric, f"{m.baseline:.3f}", f"{m.now:.3f}", m.why)
    out.print(table)


@eval_app.command("history")
def history(
    suite: Annotated[str, typer.Argument(help="The suite's id (as in its file).")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """A suite's runs, newest first, with their scores."""
    settings = get_settings()
    runs = on_store(lambda store: store.list_runs(scoped_id(None, suite), limit=limit))
    if not runs:
        err.print(f"no runs of suite '{suite}' in {describe_store(settings)}")
        raise typer.Exit(EXIT_INVALID_INPUT)
    table = Table(title=f"suite {suite}: {len(runs)} run(s), newest first")
    for col in ("run", "created", "model", "version", "status", "pass rate", "kappa", "regressions"):
        table.add_column(col)
    for r in runs:
        s = RunScores.model_validate(r.scores) if r.scores else None
        kappa = s.agreement.qwk if s and s.agreement and s.agreement.qwk is not None else None
        regressed = Regressions.model_validate(r.regressions) if r.regressions else None
        table.add_row(r.id, f"{r.created_at:%Y-%m-%d %H:%M}" if r.created_at else "", r.model or "(default)",
                      r.version[:8], r.status.value, f"{s.pass_rate:.1%}" if s else "",
                      "" if kappa is None else f"{kappa:.3f}",
                      "" if regressed is None else ("yes" if regressed.any else "no"))
    out.print(table)


@eval_app.command("report")
def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run's id, as stored.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", dir_okay=False,
                                                help="The HTML file to write (default: RUN.report.html, "
                                                     "here).")] = None,
    history: Annotated[int, typer.Option(min=1, max=1000, help="Runs in the pass-rate chart, ending at this "
                                                               "one.")] = 30,
) -> None:
    """Write RUN's report: one self-contained HTML file (no scripts, no network) with its scores, the suite's
    pass rate over its runs, each assertion, the grading confusion matrix and the failed cases."""
    settings = get_settings()
    from handler.evals import report_inputs  # the suite as the run ran it

    parts = on_store(lambda store: report_inputs(store, run_id, history))
    if parts is None:
        err.print(f"[bold red]error:[/] no eval run '{escape(run_id)}' in {describe_store(settings)}")
        raise typer.Exit(EXIT_INVALID_INPUT)
    run_rec, earlier, results, suite = parts
    html = render_report(run_rec, earlier, results, suite, generated_at=datetime.now(UTC))
    path = output or Path(f"{run_id}.report.html")
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as e:
        err.print(f"[bold red]error:[/] cannot write {escape(str(path))}: {escape(str(e))}")
        raise typer.Exit(EXIT_INVALID_INPUT) from e
    if run_rec.scores is None:
        err.print(f"[yellow]run {escape(run_id)} has not finished ({run_rec.status.value}): the report shows what is "
                  "stored so far[/]")
    typer.echo(str(path))
