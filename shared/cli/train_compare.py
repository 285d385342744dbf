"""`llm-jobs train compare ADAPTER [--suite FILE ...] [--json]`: a trained adapter against its base model
(README, "Fine-tuning → Compare").

First what its training measured, from the store's record (`AdapterRecord.metrics`): held-out perplexity of
the base and of base + adapter, the training loss first to last, the held-out loss, steps and tokens/s, and
where its files are (the adapter, the merged model and the model card when they are beside it).

Then, for each `--suite`, the suite run twice on one engine booted here with LoRA on: by the base model, then
by the adapter (each an ordinary eval run, kept in the store: `llm-jobs eval history SUITE`; the adapter's run
has the base's as its baseline). A table per suite puts pass rate and mean score per assertion side by side,
with the difference. `--json` prints all of it as one JSON document on stdout instead (for scripts and CI).

Exits 0, 1 when a run's job failed (or the store or the engine did), 2 for an unknown adapter or a suite
that cannot run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.cli.common import (
    EXIT_INVALID_INPUT,
    EXIT_JOB_FAILED,
    err,
    on_store,
    setup_logging,
)
from shared.cli.evals import (
    SuiteRun,
    adapter_settings,
    boot_engine,
    git_revision,
    read_suite,
    run_or_exit,
    run_suite,
)
from shared.contracts.adapters import AdapterRecord
from shared.contracts.events import Outcome
from shared.contracts.settings import Settings, get_settings
from shared.evals.scoring import RunScores
from shared.evals.suite import Suite
from shared.stores import describe_store, open_store
from shared.stores.base import Store

if TYPE_CHECKING:
    from handler.engine.base import Engine

out = Console()


# ## What training measured (no engine)


def _number(v: object) -> int | float | None:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _change(before: int | float | None, after: int | float | None) -> float | None:
    """The relative change from `before` to `after` (-0.25: a quarter lower); None without both."""
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before


def adapter_files(rec: AdapterRecord) -> dict[str, str | None]:
    """Where the adapter's files are: its directory, and the merged model and the model card when training
    wrote them beside it (`<job dir>/adapter`, `<job dir>/merged`, README.md). Reads the disk: not on a loop."""
    adapter_dir = Path(rec.path)
    merged = adapter_dir.parent / "merged"
    card = next((c for c in (adapter_dir / "README.md", merged / "README.md") if c.is_file()), None)
    return {"adapter_dir": str(adapter_dir), "merged_dir": str(merged) if merged.is_dir() else None,
            "model_card": str(card) if card else None}


def training_figures(rec: AdapterRecord) -> dict[str, Any]:
    """Base versus adapter from the record's metrics: perplexity and loss, each with its relative change."""
    m = rec.metrics or {}
    base_ppl, adapter_ppl = _number(m.get("base_perplexity")), _number(m.get("adapter_perplexity"))
    first, last = _number(m.get("first_loss")), _number(m.get("last_loss"))
    return {"perplexity": {"base": base_ppl, "adapter": adapter_ppl, "change": _change(base_ppl, adapter_ppl)},
            "train_loss": {"first": first, "last": last, "change": _change(first, last)},
            "eval_loss": _number(m.get("eval_loss")), "steps": _number(m.get("steps")),
            "tokens_per_s": _number(m.get("tokens_per_s"))}


def _f(v: int | float | None, spec: str = ".4f") -> str:
    return "" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:+.1%}"


def show_training(rec: AdapterRecord, figures: dict[str, Any], files: dict[str, str | None]) -> None:
    base = escape(rec.base_model or "its base model")
    if not rec.metrics:
        out.print(f"adapter [bold]{escape(rec.name)}[/] over {base}: no training figures (it was not trained "
                  "here, or was recorded by hand)")
    else:
        table = Table(title=f"base vs adapter {escape(rec.name)}", caption=f"base model: {base}")
        table.add_column("")
        table.add_column("base", justify="right")
        table.add_column("adapter", justify="right")
        table.add_column("change", justify="right")
        ppl, loss = figures["perplexity"], figures["train_loss"]
        if ppl["base"] is not None or ppl["adapter"] is not None:
            table.add_row("held-out perplexity", _f(ppl["base"], ".3f"), _f(ppl["adapter"], ".3f"),
                          _pct(ppl["change"]))
        if loss["first"] is not None or loss["last"] is not None:
            table.add_row("training loss (first → last)", _f(loss["first"]), _f(loss["last"]), _pct(loss["change"]))
        if figures["eval_loss"] is not None:
            table.add_row("held-out loss", "", _f(figures["eval_loss"]), "")
        if figures["steps"] is not None:
            table.add_row("steps", "", f"{figures['steps']:g}", "")
        if figures["tokens_per_s"] is not None:
            table.add_row("tokens/s", "", f"{figures['tokens_per_s']:,.1f}", "")
        out.print(table)
    out.print(f"adapter: {escape(str(files['adapter_dir']))}"
              + (f"\nmerged model: {escape(files['merged_dir'])}" if files["merged_dir"] else "")
              + (f"\nmodel card: {escape(files['model_card'])}" if files["model_card"] else "")
              + (f"\ntraining job: {escape(rec.job_id)}" if rec.job_id else ""))


# ## The suites, run by the base and by the adapter


def _run_doc(r: SuiteRun) -> dict[str, Any]:
    return {"run_id": r.run_id, "outcome": r.final.outcome.value, "reason": r.final.summary.reason,
            "scores": r.scores.model_dump(mode="json")}


def suite_diff(base: RunScores, tuned: RunScores) -> dict[str, Any]:
    """Adapter minus base: the pass rate, the mean score, and each assertion's mean score."""
    metrics: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys([*base.metrics, *tuned.metrics]):
        b, a = base.metrics.get(name), tuned.metrics.get(name)
        bs, as_ = (b.mean_score if b else None), (a.mean_score if a else None)
        metrics[name] = {"base": bs, "adapter": as_, "diff": None if bs is None or as_ is None else as_ - bs}
    out_: dict[str, Any] = {"pass_rate": tuned.pass_rate - base.pass_rate,
                            "mean_score": tuned.mean_score - base.mean_score, "metrics": metrics}
    qb = base.agreement.qwk if base.agreement else None
    qa = tuned.agreement.qwk if tuned.agreement else None
    if qb is not None or qa is not None:
        out_["qwk"] = {"base": qb, "adapter": qa, "diff": None if qb is None or qa is None else qa - qb}
    return out_


async def compare_suites(store: Store, engine: Engine, settings: Settings, adapter: str,
                         suites: Sequence[tuple[Suite, Path | None]], *, model: str | None = None,
                         any_model: bool = False, git_rev: str | None = None) -> list[dict[str, Any]]:
    """Each suite run twice on `engine` (booted with LoRA on, left open): by the base model, then by `adapter`
    with the base's run as its baseline; the two side by side (`suite_diff`), and the cases that pass only on
    one side. Raises what `run_suite` raises."""
    from handler.evals import all_scores  # the engine's layer: loaded when runs start

    compared: list[dict[str, Any]] = []
    for suite, path in suites:
        base = await run_suite(store, suite, settings, engine=engine, model=model, git_rev=git_rev,
                               any_model=any_model)
        tuned = await run_suite(store, suite, settings, engine=engine, model=model, adapter=adapter,
                                baseline=base.run_id, git_rev=git_rev, any_model=any_model)
        passed_base = {s.case_id: s.passed for s in await all_scores(store, base.run_id)}
        passed_tuned = {s.case_id: s.passed for s in await all_scores(store, tuned.run_id)}
        compared.append({
            "suite": suite.id, "file": str(path) if path else None, "cases": len(suite.cases),
            "base": _run_doc(base),
            "adapter": {**_run_doc(tuned), "regressions": tuned.regressions and tuned.regressions.model_dump(
                mode="json")},
            "diff": suite_diff(base.scores, tuned.scores),
            "fixed": sorted(c for c, ok in passed_tuned.items() if ok and passed_base.get(c) is False),
            "broken": sorted(c for c, ok in passed_tuned.items() if not ok and passed_base.get(c) is True),
        })
    return compared


def show_suite(doc: dict[str, Any]) -> None:
    base, tuned, diff = doc["base"], doc["adapter"], doc["diff"]
    b, a = RunScores.model_validate(base["scores"]), RunScores.model_validate(tuned["scores"])
    table = Table(title=f"suite {escape(doc['suite'])}: base vs adapter ({doc['cases']} case(s))")
    table.add_column("")
    table.add_column("base", justify="right")
    table.add_column("adapter", justify="right")
    table.add_column("difference", justify="right")
    table.add_row("pass rate", f"{b.pass_rate:.1%} ({b.passed}/{b.cases})",
                  f"{a.pass_rate:.1%} ({a.passed}/{a.cases})", f"{diff['pass_rate'] * 100:+.1f} pp")
    table.add_row("mean score", f"{b.mean_score:.3f}", f"{a.mean_score:.3f}", f"{diff['mean_score']:+.3f}")
    for name, m in diff["metrics"].items():
        table.add_row(f"{escape(name)} mean score", _f(m["base"], ".3f"), _f(m["adapter"], ".3f"),
                      _f(m["diff"], "+.3f"))
    if "qwk" in diff:
        q = diff["qwk"]
        table.add_row("grading kappa (QWK)", _f(q["base"], ".3f"), _f(q["adapter"], ".3f"), _f(q["diff"], "+.3f"))
    out.print(table)
    out.print(f"runs: base {escape(base['run_id'])}, adapter {escape(tuned['run_id'])}")
    if doc["fixed"]:
        out.print(f"[green]pass only with the adapter:[/] {escape(', '.join(doc['fixed']))}")
    if doc["broken"]:
        out.print(f"[red]pass only on the base:[/] {escape(', '.join(doc['broken']))}")
    for side, run in (("base", base), ("adapter", tuned)):
        if run["outcome"] != Outcome.completed.value:
            err.print(f"[bold red]the {side} run's job ended {run['outcome']}[/]: {escape(run['reason'] or '')}")


# ## The command


def compare(
    adapter: Annotated[str, typer.Argument(metavar="ADAPTER", help="The adapter's name (`llm-jobs adapters list`).")],
    suite: Annotated[list[Path] | None, typer.Option(
        "--suite", exists=True, dir_okay=False,
        help="An eval suite (YAML or JSON) to run by the base and by the adapter; repeat for more.")] = None,
    model: Annotated[str | None, typer.Option(
        help="The base model to serve (HF id or path) [default: the one the adapter was trained on, when its "
             "training config names one; else MODEL_NAME].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole comparison as JSON on stdout.")] = False,
) -> None:
    """Compare ADAPTER with its base: what training measured (held-out perplexity, loss), and with --suite each
    suite run by the base and by the adapter on one engine booted here, side by side."""
    settings = get_settings()
    setup_logging(settings)
    rec, known = on_store(lambda store: _find(store, adapter))
    if rec is None:
        names = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        err.print(f"[bold red]error:[/] no adapter '{escape(adapter)}' in {describe_store(settings)} "
                  f"(known: {escape(names)})")
        raise typer.Exit(EXIT_INVALID_INPUT)
    files = adapter_files(rec)
    figures = training_figures(rec)
    doc: dict[str, Any] = {"adapter": rec.name, "base_model": rec.base_model, "job_id": rec.job_id,
                           **files, "metrics": rec.metrics, "training": figures, "suites": []}

    if suite:
        trained_on = (rec.config or {}).get("base_model")
        model = model or (trained_on if isinstance(trained_on, str) and trained_on else None)
        if model:
            settings = settings.model_copy(update={"model_name": model})
        settings = settings.model_copy(update={"enable_lora": True})
        suites = [(read_suite(p, settings, any_model=bool(model)), p) for p in suite]  # exits 2 on a bad one
        doc["suites"] = _run_suites(settings, rec.name, suites, model=model)

    doc["ok"] = all(s[side]["outcome"] == Outcome.completed.value for s in doc["suites"]
                    for side in ("base", "adapter"))
    if as_json:
        typer.echo(json.dumps(_finite(doc), indent=2, allow_nan=False))
        for s in doc["suites"]:
            for side in ("base", "adapter"):
                if s[side]["outcome"] != Outcome.completed.value:
                    err.print(f"[bold red]suite {escape(s['suite'])}: the {side} run's job ended "
                              f"{s[side]['outcome']}[/]: {escape(s[side]['reason'] or '')}")
    else:
        show_training(rec, figures, files)
        for s in doc["suites"]:
            show_suite(s)
    if not doc["ok"]:
        raise typer.Exit(EXIT_JOB_FAILED)


async def _find(store: Store, name: str) -> tuple[AdapterRecord | None, list[str]]:
    """The adapter's record, or None and the names the store knows."""
    rec = await store.get_adapter(name)
    return (rec, []) if rec is not None else (None, [a.name for a in await store.list_adapters()])


def _finite(v: Any) -> Any:
    """`v` with every NaN or infinity as null: the JSON printed is JSON."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _run_suites(settings: Settings, adapter: str, suites: list[tuple[Suite, Path]], *, model: str | None
                ) -> list[dict[str, Any]]:
    """Boot the engine once (LoRA on, MAX_LORA_RANK to fit the adapter) and compare every suite on it."""

    async def go() -> list[dict[str, Any]]:
        store = open_store(settings)
        try:
            engine = await boot_engine(await adapter_settings(settings, store, adapter))
            try:
                return await compare_suites(store, engine, settings, adapter, suites, model=model,
                                            any_model=bool(model), git_rev=git_revision())
            finally:
                await engine.close()
        finally:
            await store.close()

    return run_or_exit(go())
