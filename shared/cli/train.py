"""`llm-jobs train`: start a fine-tuning job and watch its loss (README, "Fine-tuning").

    llm-jobs data prepare examples/training/grades_ca.jsonl -o prepared/
    llm-jobs train start prepared/ --adapter grades-ca --max-steps 30          # runs here, streams its steps
    llm-jobs train start prepared/ --adapter grades-ca --backend http --detach  # on the API's workers
    llm-jobs train watch JOB_ID --backend http
    llm-jobs train compare grades-ca [--suite suite.yaml]                       # base versus adapter

A training job is a job: it goes through the SDK's backends (`local` runs it in this process, `http`
through the API and its dispatcher: the queue, RunPod or Modal), and its events are TrainEvents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from shared.cli.common import EXIT_JOB_FAILED, EXIT_OK, err, setup_logging
from shared.cli.evals import run_or_exit
from shared.cli.train_compare import compare
from shared.contracts.events import ErrorEvent, FinalEvent, Outcome, TrainEvent
from shared.contracts.settings import get_settings
from shared.contracts.training import TrainReport
from shared.sdk import AsyncClient

train_app = typer.Typer(help="Fine-tune LoRA adapters: start a training job, watch it, compare it with the base.",
                        no_args_is_help=True)

INTERRUPTED = "interrupted; the job keeps its last checkpoint: start it again with the same --id to resume"

train_app.command(help="Compare an adapter with its base: held-out perplexity, losses, and eval suites.")(compare)
Backend = typer.Option("--backend", help="Where it runs: local (this process), http (the API), runpod or modal.")


def _config(file: Path | None, given: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig's fields: the --config file's (JSON or YAML), then the flags given."""
    config: dict[str, Any] = {}
    if file is not None:
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            loaded = yaml.safe_load(text)
        else:
            loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{file} must hold an object of training options", param_hint="--config")
        config.update(loaded)
    lora = {k: given.pop(k) for k in ("r", "alpha", "dropout", "target_modules") if given.get(k) is not None}
    if lora:
        config["lora"] = {**config.get("lora", {}), **lora}
    config.update({k: v for k, v in given.items() if v is not None})
    return config


def _line(ev: TrainEvent) -> str:
    head = f"step {ev.step}/{ev.max_steps}"
    match ev.phase:
        case "train":
            parts = [head, f"loss {ev.loss:.4f}" if ev.loss is not None else "",
                     f"lr {ev.learning_rate:.2e}" if ev.learning_rate is not None else "",
                     f"{ev.tokens_per_s:,.0f} tok/s" if ev.tokens_per_s else "",
                     f"ETA {ev.eta_s:,.0f} s" if ev.eta_s is not None else ""]
            return "  ".join(p for p in parts if p)
        case "eval":
            return f"{head}  [cyan]held-out loss {ev.eval_loss:.4f}[/]" if ev.eval_loss is not None else head
        case "perplexity":
            return f"[cyan]held-out perplexity ({ev.message}): {ev.perplexity:.3f}[/]"
        case "checkpoint":
            return f"[dim]{head}  checkpoint saved ({ev.message})[/]"
        case "resume":
            return f"[yellow]resuming from {ev.message}[/]"
        case _:
            return f"[green]exported: {ev.message}[/]"


def show_report(report: TrainReport) -> None:
    table = Table(title=f"adapter {report.adapter} over {report.base_model}")
    table.add_column("")
    table.add_column("base", justify="right")
    table.add_column("base + adapter", justify="right")
    if report.base_perplexity is not None and report.adapter_perplexity is not None:
        change = (report.adapter_perplexity - report.base_perplexity) / report.base_perplexity
        table.add_row("held-out perplexity", f"{report.base_perplexity:.3f}",
                      f"{report.adapter_perplexity:.3f} ({change:+.1%})")
    if report.losses:
        table.add_row("training loss (first → last logged)", f"{report.losses[0][1]:.4f}",
                      f"{report.losses[-1][1]:.4f}")
    if report.eval_loss is not None:
        table.add_row("held-out loss", "", f"{report.eval_loss:.4f}")
    err.print(table)  # stdout has the job id alone, for scripts
    err.print(f"{report.steps} steps, {report.train_examples} examples, {report.train_tokens:,} tokens, "
              f"{report.tokens_per_s:,.1f} tokens/s, {report.runtime_s:,.1f} s")
    err.print(f"adapter: {report.adapter_dir}" + (f"\nmerged model: {report.merged_dir}" if report.merged_dir else "")
              + (f"\nmodel card: {report.model_card}" if report.model_card else ""))


async def _follow(events: Any) -> FinalEvent | None:
    final = None
    async for event in events:
        match event:
            case TrainEvent():
                err.print(_line(event))
            case ErrorEvent(error=message):
                err.print(f"[bold red]error:[/] {message}")
            case FinalEvent():
                final = event
    return final


def _end(final: FinalEvent | None, *, exit_ok: bool = True) -> None:
    if final is None:
        err.print("[bold red]the event stream ended without a final event[/]")
        raise typer.Exit(EXIT_JOB_FAILED)
    report = final.summary.training
    if report:
        show_report(TrainReport.model_validate(report))
    if final.outcome is not Outcome.completed:
        err.print(f"[bold red]training {final.outcome.value}[/]: {final.summary.reason or ''}")
        raise typer.Exit(EXIT_JOB_FAILED)
    if exit_ok:
        raise typer.Exit(EXIT_OK)


@train_app.command()
def start(
    data: Annotated[Path, typer.Argument(help="A directory `llm-jobs data prepare` wrote (train.jsonl and "
                                              "eval.jsonl), or a JSONL file of chat examples.", exists=True)],
    adapter: Annotated[str, typer.Option(help="The name the adapter is registered under: what batch jobs name.")],
    held_out: Annotated[Path | None, typer.Option(help="Held-out examples (JSONL) [default: DATA's eval.jsonl].",
                                                  exists=True, dir_okay=False)] = None,
    config: Annotated[Path | None, typer.Option(help="Training options (JSON or YAML): TrainConfig's fields; "
                                                     "the flags below win.", exists=True, dir_okay=False)] = None,
    base_model: Annotated[str | None, typer.Option(help="The base: hub id or directory [default: MODEL_NAME's]."
                                                   )] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps [default: from --epochs].")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data [default: 1].")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate [default: 2e-4].")] = None,
    lr_scheduler: Annotated[str | None, typer.Option(help="linear, cosine (default), constant, ...")] = None,
    r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank [default: 16].")] = None,
    alpha: Annotated[int | None, typer.Option("--lora-alpha", help="LoRA alpha [default: 32].")] = None,
    dropout: Annotated[float | None, typer.Option("--lora-dropout", help="LoRA dropout [default: 0.05].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step [default: 4].")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Steps per optimizer step [default: 1].")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="Longer examples are cut [default: 2048].")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="Held-out loss every N steps [default: at the end].")
                          ] = None,
    save_steps: Annotated[int | None, typer.Option(help="A checkpoint every N steps [default: 50].")] = None,
    merge: Annotated[bool | None, typer.Option("--merge/--no-merge", help="Also write the merged model.")] = None,
    suite: Annotated[list[Path] | None, typer.Option(
        "--suite", exists=True, dir_okay=False, help="An eval suite to run by the base and by the adapter once "
        "training ends (as `llm-jobs train compare --suite`); repeat for more.")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="The job's id: the same id resumes it.")] = None,
    backend: Annotated[str, Backend] = "local",
    detach: Annotated[bool, typer.Option(help="Print the job id and return (not with --backend local).")] = False,
) -> None:
    """Train a LoRA adapter on DATA, streaming its steps; at the end, base versus adapter on the held-out split."""
    settings = get_settings()
    setup_logging(settings)
    options = _config(config, {"base_model": base_model, "max_steps": max_steps, "epochs": epochs,
                               "learning_rate": learning_rate, "lr_scheduler": lr_scheduler, "r": r, "alpha": alpha,
                               "dropout": dropout, "batch_size": batch_size, "grad_accum": grad_accum,
                               "max_seq_len": max_seq_len, "eval_steps": eval_steps, "save_steps": save_steps,
                               "merge": merge})
    if detach and backend == "local":
        raise typer.BadParameter("a local job runs in this process: it cannot be detached", param_hint="--detach")

    async def go() -> FinalEvent | None:
        async with AsyncClient(backend, settings=settings) as client:  # type: ignore[arg-type]
            job = await client.train(data, adapter=adapter, held_out=held_out, id=job_id, **options)
            err.print(f"training job [bold]{job.id}[/] ({backend}): adapter {adapter}")
            print(job.id, flush=True)
            if detach:
                return None
            return await _follow(job.stream())

    final = run_or_exit(go(), interrupted=INTERRUPTED)
    if detach:
        raise typer.Exit(EXIT_OK)
    if suite and final is not None and final.outcome is Outcome.completed:
        _end(final, exit_ok=False)
        compare(adapter, suite=suite)  # the suites on the base and on the adapter, one engine booted here
        raise typer.Exit(EXIT_OK)
    _end(final)


@train_app.command()
def watch(
    job_id: Annotated[str, typer.Argument(help="The training job's id.")],
    backend: Annotated[str, Backend] = "http",
) -> None:
    """Follow a training job's steps until it ends, then show base versus adapter."""
    settings = get_settings()
    setup_logging(settings)

    async def go() -> FinalEvent | None:
        async with AsyncClient(backend, settings=settings) as client:  # type: ignore[arg-type]
            events: Any = client.job(job_id).stream()
            return await _follow(events)

    _end(run_or_exit(go(), interrupted=INTERRUPTED))
