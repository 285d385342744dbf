"""`llm-jobs plan INPUT`: which GPU and platform to run a job on, how long it takes and what it costs, before it
runs (docs/architecture.md, "Planning").

The job is read as `llm-jobs run` reads it. Its prompt tokens are counted with the model's tokenizer and chat
template (handler/engine/tokens.py); `--sample K` boots the engine and runs K items to measure how much they
write. The plan itself is shared/planning/plan.py `make_plan` over the dated tables in shared/planning/.

Exit codes: 0 with a plan; 2 when the input, a GPU name, the model, its tokenizer or a table is not usable.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, err, job_options, load, served_models, setup_logging
from shared.contracts.errors import ConfigError, InputError
from shared.contracts.prepare import Limits
from shared.contracts.settings import DEFAULT_MODEL_NAME, Settings, get_settings
from shared.planning.options import plan_options
from shared.planning.plan import DEFAULT_GPUS, Plan, PlanRow, TokenCounts, duration, make_plan
from shared.planning.specs import ModelSpec
from shared.planning.tables import TableError, Tables, load_tables

out = Console()


def _refuse(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(EXIT_INVALID_INPUT)


def plan(
    input: Annotated[Path, typer.Argument(help="Job JSON, items JSONL or OpenAI Batch JSONL (as `run` takes).",
                                          exists=True, dir_okay=False)],
    model: Annotated[str | None, typer.Option(help="The model to plan for (HF id or path) [default: MODEL_NAME, or "
                                                   "the embedded model].")] = None,
    gpus: Annotated[str, typer.Option(help="GPUs to compare, by comma (`cpu`: this machine).")]
    = ",".join(DEFAULT_GPUS),
    platform: Annotated[Literal["runpod", "modal"] | None, typer.Option(help="One platform [default: both].")]
    = None,
    workers: Annotated[int, typer.Option(min=1, help="Workers (engines) the job is split over.")] = 1,
    sample: Annotated[int, typer.Option(min=0, help="Boot the engine and run K items to measure their mean "
                                                    "output tokens (else max_tokens bounds it).")] = 0,
    quantization: Annotated[Literal["awq", "gptq", "fp8"] | None, typer.Option(
        help="The weights' quantization [default: QUANTIZATION, or the checkpoint's own].")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Max tokens per item.")] = None,
    template: Annotated[Path | None, typer.Option(help="Jinja2 template file over item fields.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    calibration: Annotated[Path | None, typer.Option(help="A calibration table to read [default: the package's "
                                                          "shared/planning/calibration.json].")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Plan a job: does it fit each GPU, how long it takes and what it costs on each platform, ranked."""
    settings = get_settings()
    if model:
        settings = settings.model_copy(update={"model_name": model})
    setup_logging(settings)
    names = [g.strip() for g in gpus.split(",") if g.strip()]
    try:
        tables = load_tables(calibration)
    except TableError as e:
        raise _refuse(str(e)) from None
    unknown = [g for g in names if tables.gpus.get(g) is None]
    if unknown or not names:
        raise _refuse(f"unknown GPU(s): {', '.join(unknown) or '(none given)'}; known: "
                      f"{', '.join(tables.gpus.names)}")
    names = [tables.gpus.get(g).name for g in names]  # type: ignore[union-attr]  # checked just above
    opts = job_options(job_id=None, template=template, system=system, schema=None, json_object=False,
                       max_tokens=max_tokens, temperature=None, top_p=None, seed=None, chunk_size=None,
                       chunk_interval=None)
    job = load(input, settings, opts, any_model=bool(model), strict=False)
    shown, tokenizer, spec = _model(settings)
    limits = Limits.from_settings(settings)
    from handler.engine.tokens import count_tokens

    try:
        counts = count_tokens(job, tokenizer, limits=limits, served_models=served_models(settings),
                              any_model=bool(model), name=shown)
    except InputError as e:
        raise _refuse(f"{input}: {e}") from None
    if sample and job.items:
        counts = asyncio.run(_sample(job, settings, sample, counts, any_model=bool(model)))
    options = plan_options(settings, model=shown, gpus=names, platform=platform, workers=workers,
                           quantization=quantization, max_tokens=max_tokens)
    result = make_plan(counts, spec, options, tables)
    if json_out:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    _show(result, tables)


# ## The model


def _model(settings: Settings) -> tuple[str, Any, ModelSpec]:
    """(its name as shown, its tokenizer, its shape): the model the engine would serve with these settings. Where
    its tokenizer cannot load, prompt tokens are estimated, and a warning says so."""
    from handler.engine.tokens import plan_model

    shown = settings.model_name or DEFAULT_MODEL_NAME
    try:
        with err.status(f"loading the tokenizer of {escape(shown)}..."):
            found = plan_model(settings)
    except (OSError, ValueError, ConfigError) as e:
        raise _refuse(f"cannot plan for {shown}: {e}") from None
    if not found.exact:
        err.print(f"[yellow]warning:[/] {escape(found.why_approximate or '')}: prompt tokens are estimated "
                  "(about 4 characters a token)")
    return found.name, found.tokenizer, found.spec


# ## --sample


async def _sample(job: Any, settings: Settings, k: int, counts: TokenCounts, *, any_model: bool) -> TokenCounts:
    from handler.engine.tokens import sample_output
    from handler.engine.vllm_engine import VLLMEngine

    with err.status(f"booting the engine ({escape(settings.model_name or DEFAULT_MODEL_NAME)}) to run "
                    f"{min(k, len(job.items))} item(s)..."):
        engine = await VLLMEngine.start(settings)
        try:
            return await sample_output(job, engine, k, counts, limits=Limits.from_settings(settings),
                                       any_model=any_model)
        finally:
            await engine.close()


# ## Showing


def _money(row: PlanRow) -> str:
    if row.cost_usd is None:
        return "-"
    return "$0 (local)" if row.platform == "local" else f"${row.cost_usd:.4f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else duration(value)


def _show(p: Plan, tables: Tables) -> None:
    t = p.tokens
    output = (f"{t.output_tokens_mean:.1f} mean output tokens ({t.sampled} sampled)" if t.output_tokens_mean
              is not None else f"<= {t.completion_tokens_bound} output tokens (max_tokens)")
    table = Table(title=escape(f"{p.model} ({p.params_b:g}B, {p.weight_format}): {t.items} item(s), "
                               f"{t.prompt_tokens} prompt tokens, {output}"), box=box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=False, collapse_padding=True)
    for col in ("#", "where", "seqs", "prefill", "decode", "start", "time", "cost"):
        table.add_column(col, justify="left" if col == "where" else "right", no_wrap=col == "where")
    ranked = [r for r in p.rows if r.plannable]
    for k, r in enumerate(ranked, 1):
        where = r.label + (f" x {r.workers}" if r.workers > 1 else "")
        table.add_row(str(k), escape(where), str(r.concurrency), _secs(r.prefill_s), _secs(r.decode_s),
                      _secs(r.cold_start_s), _secs(r.time_s), _money(r),
                      style="bold green" if r == p.recommendation else None)
    out.print(table)
    kinds: dict[str, list[str]] = {}
    for r in ranked:
        if r.calibration and r.gpu not in kinds.setdefault(r.calibration, []):
            kinds[r.calibration].append(r.gpu)
    if kinds:
        out.print("throughput: " + "; ".join(f"{kind} for {', '.join(g)}" for kind, g in kinds.items()))
    skipped = [r for r in p.rows if not r.plannable]
    for r in {(r.gpu, r.why_not): r for r in skipped}.values():
        out.print(f"[yellow]not planned:[/] {escape(r.gpu)}: {escape(r.why_not or 'no figures')}")
    if p.recommendation is not None:
        out.print(f"\n[bold]recommended:[/] {escape(p.recommendation.label)}")
    out.print(escape(p.reason))
    if p.alternatives:
        out.print("[bold]alternatives:[/] " + "; ".join(
            escape(f"{r.label}: {_secs(r.time_s)}, {_money(r)}") for r in p.alternatives))
    out.print("\n[bold]assumptions[/]")
    for line in p.assumptions:
        out.print(f"- {escape(line)}")
    out.print("\n[bold]tables[/]: " + "; ".join(
        escape(f"{i.name} {i.updated} ({', '.join(s.name for s in i.sources)})") for i in p.tables))
