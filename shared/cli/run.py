from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_ITEMS_FAILED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    err,
    job_options,
    load,
    setup_logging,
    show_rejections,
)
from shared.cli.output import ResultWriter
from shared.contracts.errors import LLMJobsError
from shared.contracts.events import ChunkEvent, ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import Job
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings, get_settings
from shared.stores import Store, describe_store, open_store


def run(
    input: Annotated[Path, typer.Argument(help="Job JSON, items JSONL or OpenAI Batch JSONL.", exists=True,
                                          dir_okay=False)],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Results JSONL [default: ./<input>.results.jsonl].")] = None,
    model: Annotated[str | None, typer.Option(help="Model to serve (HF id or path); every OpenAI line is "
                                                   "mapped to it.")] = None,
    format: Annotated[Literal["ours", "openai"] | None, typer.Option(
        "--format", help="Result lines format [default: openai for OpenAI Batch input, else ours].")] = None,
    job_id: Annotated[str | None, typer.Option(help="Job id (the idempotency key): the same id resumes.")] = None,
    template: Annotated[Path | None, typer.Option(help="Jinja2 template file over item fields.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    schema: Annotated[Path | None, typer.Option(help="JSON schema file: structured output.")] = None,
    json_object: Annotated[bool, typer.Option("--json-object", help="Ask for any JSON object.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Max tokens per item.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Results per chunk [default: 10].")] = None,
    chunk_interval: Annotated[float | None, typer.Option(help="Seconds between chunks at most.")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter for every item that names none (`llm-jobs "
                                                     "adapters list`).")] = None,
    strict: Annotated[bool, typer.Option(help="Refuse the whole job if any item is invalid.")] = False,
) -> None:
    settings = get_settings()
    if model:
        settings = settings.model_copy(update={"model_name": model})
    setup_logging(settings)
    opts = job_options(job_id=job_id, template=template, system=system, schema=schema, json_object=json_object,
                       max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       chunk_size=chunk_size, chunk_interval=chunk_interval, adapter=adapter)
    job = load(input, settings, opts, any_model=bool(model), strict=strict)
    show_rejections(job)
    out = output or Path.cwd() / f"{input.stem}.results.jsonl"
    try:
        final = asyncio.run(_run(job, settings, out, format or job.result_format, any_model=bool(model)))
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted; results written so far are in {out}[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except LLMJobsError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from e
    _show_summary(final, out)
    if final.outcome is not Outcome.completed:
        raise typer.Exit(EXIT_JOB_FAILED)
    raise typer.Exit(EXIT_ITEMS_FAILED if final.summary.failed else EXIT_OK)


async def _run(job: Job, settings: Settings, out: Path, fmt: Literal["ours", "openai"], *,
               any_model: bool) -> FinalEvent:
    from handler.engine.vllm_engine import VLLMEngine
    from handler.runner import run_job

    store = open_store(settings)
    err.print(f"job [bold]{job.id}[/]: {job.total} item(s); results to {out} and {describe_store(settings)}")
    with err.status(f"booting the engine ({settings.model_name or 'embedded SmolLM2-135M-Instruct'})..."):
        engine = await VLLMEngine.start(settings)
    # an adapter's name in OpenAI lines, as vLLM's OpenAI server writes it
    writer = ResultWriter(out, fmt, job_id=job.id, model=job.adapter or engine.model_name)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[rate]:.2f} items/s"),
                   TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=err)
    final: FinalEvent | None = None
    try:
        # The output always holds every result of the job: on a re-run, what the store already
        # has goes in first, then the new results as they arrive.
        stored = await _copy_stored(store, job.id, writer)
        if stored:
            err.print(f"resuming: {stored} result(s) already stored were copied to {out}; they are not recomputed")
        with bar:
            task = bar.add_task(job.id, total=job.total, failed=0, rate=0.0, eta="?")
            async for event in run_job(job, engine, store=store, limits=Limits.from_settings(settings),
                                       any_model=any_model, chunk_size=settings.default_chunk_size,
                                       chunk_interval_s=settings.default_chunk_interval_s,
                                       store_retry_s=settings.store_retry_s):
                match event:
                    case ChunkEvent(results=results, progress=p):
                        await asyncio.to_thread(writer.write, results)
                        bar.update(task, completed=p.completed + p.failed, failed=p.failed, rate=p.items_per_s,
                                   eta="?" if p.eta_s is None else f"{p.eta_s:.0f}s")
                    case ErrorEvent(error=message):
                        err.print(f"[bold red]error:[/] {message}")
                    case FinalEvent():
                        final = event
    finally:
        writer.close()
        await store.close()
        await engine.close()
    assert final is not None
    return final


async def _copy_stored(store: Store, job_id: str, writer: ResultWriter) -> int:
    n, after = 0, None
    while page := await store.results(job_id, after=after, limit=1000):
        await asyncio.to_thread(writer.write, page)
        n += len(page)
        after = page[-1].custom_id
    return n


def _show_summary(final: FinalEvent, out: Path) -> None:
    s = final.summary
    table = Table(title=f"job {final.job_id}: {final.outcome}", title_style="bold green"
                  if final.outcome is Outcome.completed and not s.failed else "bold yellow")
    table.add_column("")
    table.add_column("", justify="right")
    for k, v in [("items", s.total), ("ok", s.completed), ("failed", s.failed), ("skipped (stored before)", s.skipped),
                 ("elapsed", f"{s.elapsed_s:.1f} s"), ("items/s", f"{s.items_per_s:.2f}"),
                 ("prompt tokens", s.prompt_tokens), ("completion tokens", s.completion_tokens),
                 ("tokens/s", f"{s.tokens_per_s:.1f}")]:
        table.add_row(k, str(v))
    if s.latency_p50_ms is not None:
        table.add_row("item latency p50 / p95 / max",
                      f"{s.latency_p50_ms:.0f} / {s.latency_p95_ms or 0:.0f} / {s.latency_max_ms or 0:.0f} ms")
    if s.first_chunk_s is not None:
        table.add_row("first results after", f"{s.first_chunk_s:.1f} s")
    if s.peak_kv_cache is not None:
        table.add_row("peak KV cache", f"{100 * s.peak_kv_cache:.3g} %")
    for code, n in sorted(s.error_codes.items()):
        table.add_row(f"error: {code}", str(n))
    if s.reason:
        table.add_row("reason", s.reason)
    table.add_row("results", str(out))
    err.print(table)
