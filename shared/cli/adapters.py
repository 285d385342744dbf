"""`llm-jobs adapters add | list | rm`: the LoRA adapters the engines may serve, listed in the store.

An adapter is a PEFT directory (adapter_config.json and its weights) on a path the engine's machine sees:
a local directory, or a volume mounted there. A job or an item names it (`adapter`); the engine loads it
before the job's first item runs (README, "LoRA adapters").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, err, on_store
from shared.contracts.adapters import AdapterRecord, find_adapters, read_adapter
from shared.contracts.models import ID_PATTERN
from shared.contracts.settings import get_settings

adapters_app = typer.Typer(help="Add, list and remove LoRA adapters (kept in the store; README, \"LoRA adapters\").",
                           no_args_is_help=True)


def _refuse(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(EXIT_INVALID_INPUT)


@adapters_app.command()
def add(
    name: Annotated[str, typer.Argument(help="The name jobs use (`adapter`): letters, digits and . _ : -")],
    path: Annotated[Path, typer.Argument(help="The adapter's directory: adapter_config.json and its weights.")],
    base: Annotated[str | None, typer.Option(help="The base model it was made for; default: its adapter_config.json's "
                                                  "base_model_name_or_path.")] = None,
    check: Annotated[bool, typer.Option(help="Read the directory here first. --no-check records a path only the "
                                             "engine's machine sees (a volume), as it is.")] = True,
) -> None:
    """Record NAME as the adapter in PATH (a second add of NAME replaces its path and base, and forgets a trained
    adapter's config, metrics and job)."""
    if not re.match(ID_PATTERN, name):
        raise _refuse(f"{name[:40]!r} is not an adapter name: 1 to 128 letters, digits and . _ : -, starting with a "
                      "letter or digit")
    where, rank = (str(path.expanduser().resolve()) if check else str(path)), None
    if check:
        try:
            files = read_adapter(Path(where))
        except ValueError as e:
            raise _refuse(str(e)) from None
        base, rank = base or files.base_model, files.rank
    rec = AdapterRecord(name=name, base_model=base, path=where)
    on_store(lambda store: store.put_adapter(rec))
    said = f", rank {rank}" if rank else ""
    err.print(f"added adapter [bold]{name}[/] (base {base or 'not said'}{said}) at {where}")


@adapters_app.command("list")
def list_adapters() -> None:
    """The store's adapters, then ADAPTERS_DIR's that the store does not list yet. A trained adapter's figures
    and the job that made it show when any adapter has them."""
    settings = get_settings()
    stored = on_store(lambda store: store.list_adapters())
    trained = [c for c, has in (("metrics", any(a.metrics for a in stored)), ("job", any(a.job_id for a in stored)))
               if has]
    table = Table("name", "base model", "path", "created", *trained)
    for a in stored:
        extra = {"metrics": metrics_summary(a.metrics), "job": a.job_id or ""}
        table.add_row(a.name, a.base_model or "", a.path, f"{a.created_at:%Y-%m-%d %H:%M}" if a.created_at else "",
                      *(extra[c] for c in trained))
    have = {a.name for a in stored}
    for name, path in (find_adapters(settings.adapters_dir) if settings.adapters_dir else {}).items():
        if name not in have:
            table.add_row(name, "", str(path), "(ADAPTERS_DIR)", *("" for _ in trained))
    Console().print(table)


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _change(label: str, before: object, after: object) -> str | None:
    b, a = _number(before), _number(after)
    if a is None:
        return None
    return f"{label} {_short(b)}→{_short(a)}" if b is not None else f"{label} {_short(a)}"


def _short(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def metrics_summary(metrics: dict[str, object] | None) -> str:
    """A trained adapter's figures in a few characters: perplexity before and after (else the loss, first to
    last), and its steps; e.g. "ppl 12.3→8.1, 30 steps". Empty: none of these."""
    if not metrics:
        return ""
    parts = [_change("ppl", metrics.get("base_perplexity"), metrics.get("adapter_perplexity"))
             or _change("loss", metrics.get("first_loss"), metrics.get("last_loss"))]
    steps = _number(metrics.get("steps"))
    if steps is not None:
        parts.append(f"{steps:g} steps")
    return ", ".join(p for p in parts if p)


@adapters_app.command()
def rm(name: Annotated[str, typer.Argument(help="The adapter's name, from `llm-jobs adapters list`.")]) -> None:
    """Forget an adapter (its files stay). An engine that loaded it keeps serving it until it restarts."""
    if not on_store(lambda store: store.remove_adapter(name)):
        raise _refuse(f"no adapter {name!r}")
    err.print(f"removed adapter {name}")

