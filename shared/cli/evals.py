"""`llm-jobs eval run | history | report`: run an eval suite on the engine here, score it, compare it with a
baseline, list a suite's runs, and write a run's report (one HTML file).

`eval run` exits 0 when the run has no regression against its baseline, 4 when it has one (for CI),
2 for a suite that cannot run (every problem listed, with its case, field and line), 1 when the
job itself failed. The same `--run-id` resumes a run: stored results are not run again, and no case
is scored twice (handler/evals.py). `--adapter NAME` has a LoRA adapter answer the cases (the engine boots
with LoRA on). `run_suite` is the run itself on an engine here, which `llm-jobs train compare` shares
(shared/cli/train_compare.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypeVar

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
from shared.contracts.adapters import find_adapters, read_adapter
from shared.contracts.errors import InputError, LLMJobsError, StoreError
from shared.contracts.events import ChunkEvent, ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import JobStatus, Summary
from shared.contracts.owners import scoped_id
from shared.contracts.prepare import Limits
from shared.contracts.settings import LORA_RANKS, Settings, get_settings
from shared.evals.regress import Regressions
from shared.evals.report import render_report
from shared.evals.scoring import RunScores
from shared.evals.suite import Suite, parse_suite
from shared.stores import describe_store, open_store
from shared.stores.base import Store

T = TypeVar("T")

if TYPE_CHECKING:
    from handler.engine.base import Engine

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
    adapter: Annotated[str | None, typer.Option(help="A LoRA adapter (`llm-jobs adapters list`) that answers the "
                                                     "cases; the engine boots with LoRA on.")] = None,
    baseline: Annotated[str | None, typer.Option(help="A run to compare a new run with: its id, or 'last' (the "
                                                      "suite's newest finished run).")] = None,
    run_id: Annotated[str | None, typer.Option(help="The run's id: the same id resumes it [default: new].")] = None,
    git_rev: Annotated[str | None, typer.Option(help="The code revision to record [default: git rev-parse "
                                                     "HEAD, when in a repository].")] = None,
) -> None:
    """Run SUITE's cases on the engine, score them as they come, then show the scores and any regression."""
    settings = get_settings()
    if model:
        settings = settings.model_copy(update={"model_name": model})
    if adapter:
        settings = settings.model_copy(update={"enable_lora": True})
    setup_logging(settings)
    suite = read_suite(suite_file, settings, any_model=bool(model))

    async def go() -> SuiteRun:
        store = open_store(settings)
        try:
            async def boot() -> Engine:
                return await boot_engine(await adapter_settings(settings, store, adapter))

            return await run_suite(store, suite, settings, boot=boot, model=model, adapter=adapter,
                                   baseline=baseline, run_id=run_id, git_rev=git_rev or git_revision(),
                                   any_model=bool(model))
        finally:
            await store.close()

    final, summary, regressions, stored_id = run_or_exit(
        go(), interrupted="interrupted; run it again with the same --run-id to resume")
    show_scores(stored_id, summary)
    show_regressions(regressions)
    if final.outcome is not Outcome.completed:
        err.print(f"[bold red]the run's job ended {final.outcome.value}[/]: {final.summary.reason or ''}")
        raise typer.Exit(EXIT_JOB_FAILED)
    if regressions is not None and regressions.any:
        raise typer.Exit(EXIT_REGRESSION)


# ## A suite's run on an engine here (`eval run`, `train compare`)


class SuiteRun(NamedTuple):
    """What `run_suite` gives back."""

    #: the run's job's final event (`outcome`: completed, failed or cancelled)
    final: FinalEvent
    scores: RunScores
    #: against the run's baseline; None without one
    regressions: Regressions | None
    #: the run's id as stored
    run_id: str


async def run_suite(store: Store, suite: Suite, settings: Settings, *, engine: Engine | None = None,
                    boot: Callable[[], Awaitable[Engine]] | None = None, model: str | None = None,
                    adapter: str | None = None, baseline: str | None = None, run_id: str | None = None,
                    git_rev: str | None = None, any_model: bool = False) -> SuiteRun:
    """Run `suite` as an eval run on an engine here: open the run (`handler/evals.py` `open_run`; the same
    `run_id` resumes it), run its job on the engine with each chunk scored as it is stored, then score what is
    left, summarize it and compare it with its baseline.

    `engine`: a booted engine, used and left open (LoRA on when `adapter` is named: its cases are answered by
    that adapter, loaded before any item runs). Or `boot`: called only when there is something to run (a run
    whose job has completed already is scored from the store), and the engine it boots is closed at the end.
    `model`: the model recorded for the run and its job [default: the suite's]; `any_model`: take any model
    name (the engine serves what it serves). Raises InputError (a run that cannot be opened, an adapter the
    engine cannot serve is a failed job instead), StoreError and EngineError.
    """
    from handler.evals import EvalHook, open_run  # the engine's layer: loaded when a run starts
    from handler.runner import run_job

    run_rec, job = await open_run(store, suite, model=model, adapter=adapter, baseline=baseline, run_id=run_id,
                                  git_rev=git_rev)
    err.print(f"eval run [bold]{escape(run_rec.id)}[/]: suite {escape(suite.id)} version {run_rec.version}, "
              f"{len(suite.cases)} case(s); stored in {describe_store(settings)}"
              + (f"; adapter {escape(run_rec.adapter)}" if run_rec.adapter else "")
              + (f"; baseline {escape(run_rec.baseline)}" if run_rec.baseline else ""))
    hook = await EvalHook.for_work(store, job, retry_s=settings.store_retry_s)  # the run's own version
    if hook is None:
        raise StoreError(f"eval run {run_rec.id}: the store did not give it back")
    record = await store.get_job(job.id)
    if record is not None and record.status is JobStatus.completed:  # nothing to run: score and report
        err.print("its job has completed already: scoring what is stored")
        final = FinalEvent(job_id=job.id, outcome=Outcome.completed,
                           summary=record.summary or Summary.empty(record.total))
        hook.engine = engine
    else:
        if engine is not None:
            eng, booted = engine, False
        elif boot is not None:
            eng, booted = await boot(), True
        else:
            raise ValueError("run_suite needs an engine, or `boot` to start one")
        hook.engine = eng  # the judges (llm_rubric) and perplexities run on it
        try:
            await hook.begin()
            final = await _drive(run_job(job, eng, store=store, limits=Limits.from_settings(settings),
                                         any_model=any_model, chunk_size=settings.default_chunk_size,
                                         chunk_interval_s=settings.default_chunk_interval_s,
                                         store_retry_s=settings.store_retry_s, on_stored=hook.scored),
                                 job.id, job.total)
        finally:
            if booted:
                await eng.close()
    summary, regressions = await hook.finish(final.outcome)
    return SuiteRun(final, summary, regressions, run_rec.id)


async def boot_engine(settings: Settings) -> Engine:
    """The vLLM engine these settings describe, booted here (a spinner on stderr meanwhile)."""
    from handler.engine.vllm_engine import VLLMEngine

    with err.status(f"booting the engine ({settings.model_name or 'embedded SmolLM2-135M-Instruct'})..."):
        return await VLLMEngine.start(settings)


async def adapter_settings(settings: Settings, store: Store, adapter: str | None) -> Settings:
    """`settings` for an engine that serves `adapter`: LoRA on, and MAX_LORA_RANK raised to the adapter's rank
    when its directory (ADAPTERS_DIR's, else the store's record: where the engine looks) is readable here and says
    more. Unchanged
    without an adapter; an adapter not found here is left for the run to refuse, naming it."""
    if adapter is None:
        return settings
    settings = settings.model_copy(update={"enable_lora": True})
    rec = await store.get_adapter(adapter)

    def rank() -> int | None:
        found = find_adapters(settings.adapters_dir) if settings.adapters_dir else {}
        path = found.get(adapter) or (Path(rec.path) if rec is not None else None)  # the engine's order
        try:
            return None if path is None else read_adapter(path).rank
        except (ValueError, OSError):  # a volume's path this machine does not see: the engine says what is wrong
            return None

    r = await asyncio.to_thread(rank)
    fits = next((n for n in LORA_RANKS if r is not None and n >= r), None)
    if fits is not None and fits > settings.max_lora_rank:
        settings = settings.model_copy(update={"max_lora_rank": fits})
    return settings


def run_or_exit(main: Coroutine[Any, Any, T], *, interrupted: str = "interrupted") -> T:
    """Run `main` to its end; ^C, input the run refuses and llm-jobs errors end the command with their exit
    codes (130, 2, 1)."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        err.print(f"[yellow]{interrupted}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except InputError as e:
        _show_issues("cannot run", [(i.where() or "run", i.message) for i in e.issues])
        raise typer.Exit(EXIT_INVALID_INPUT) from e
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e


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
        model = (r.model or "(default)") + (f" + {r.adapter}" if r.adapter else "")
        table.add_row(r.id, f"{r.created_at:%Y-%m-%d %H:%M}" if r.created_at else "", escape(model),
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
