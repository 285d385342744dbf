"""`llm-jobs data prepare IN.jsonl -o DIR`: a fine-tuning dataset made ready for a training job (README,
"Fine-tuning").

The lines are read, checked, cleaned and deduplicated by shared/contracts/train_data.py, split with a seed,
and every example is measured with the model's own tokenizer and chat template (handler/training/tokenize.py:
the tokens training will see, and which of them are the assistant's). Then DIR/train.jsonl and DIR/eval.jsonl
(`{"custom_id": "train-000001", "messages": [...]}` a line: a training job's items as they are) and
DIR/stats.json (counts, reasons, token statistics, the settings used) are written.

Exit codes: 0 when the files are written; 2 when nothing valid is left to write, a line is bad under
--strict, the input is over the size cap, train.jsonl or eval.jsonl exists without --force, or the
tokenizer does not load. A bad line is reported (line and field) and left out; it never stops the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.cli.common import EXIT_INVALID_INPUT, err, setup_logging, show_issues
from shared.contracts.errors import ConfigError
from shared.contracts.settings import DEFAULT_MODEL_NAME, Settings, get_settings
from shared.contracts.train_data import (
    MAX_FILE_BYTES,
    NEAR_DUP_MAX,
    NEAR_DUP_MIN,
    NUM_PERM,
    SHINGLE_WORDS,
    Example,
    Preparer,
    Report,
    TokenStats,
    custom_id,
    iter_lines,
    output_line,
    split,
)

data_app = typer.Typer(help="Prepare fine-tuning datasets (README, \"Fine-tuning\").", no_args_is_help=True)
out = Console()

TRAIN_FILE, EVAL_FILE, STATS_FILE = "train.jsonl", "eval.jsonl", "stats.json"
#: examples over --max-seq-len named in the warning and in stats.json
LONG_SHOWN = 5


def _refuse(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(EXIT_INVALID_INPUT)


@data_app.command()
def prepare(
    source: Annotated[Path, typer.Argument(metavar="IN.jsonl", help="JSONL: {\"messages\": [...]} or "
                                           "{\"prompt\", \"completion\", \"system\"?} a line.")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Where train.jsonl, eval.jsonl and stats.json go.")],
    train_ratio: Annotated[float, typer.Option(min=0.01, max=1.0, help="The share of examples trained on; the "
                                               "rest are held out (eval-*).")] = 0.9,
    seed: Annotated[int, typer.Option(min=0, help="The split's seed: the same input and seed, the same split.")] = 42,
    near_dup_threshold: Annotated[float, typer.Option(min=NEAR_DUP_MIN, max=NEAR_DUP_MAX, help="Word-shingle "
                                                      "Jaccard similarity from which an example is a near "
                                                      "duplicate of an earlier one.")] = 0.9,
    near_dups: Annotated[bool, typer.Option(help="Drop near duplicates (exact ones are always dropped).")] = True,
    max_seq_len: Annotated[int, typer.Option(min=16, max=131_072, help="Training's sequence length: longer "
                                             "examples are counted and named (training cuts them).")] = 2048,
    model: Annotated[str | None, typer.Option(help="The tokenizer's model: a local directory or a hub id. "
                                              "Default: MODEL_NAME, or the embedded model.")] = None,
    strict: Annotated[bool, typer.Option(help="Write nothing (exit 2) if any line is bad.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite train.jsonl and eval.jsonl in --out.")] = False,
) -> None:
    """Check, clean, deduplicate and split IN.jsonl, measure its tokens, and write DIR/train.jsonl,
    DIR/eval.jsonl and DIR/stats.json."""
    settings = get_settings()
    setup_logging(settings)
    existing = [p for p in (out_dir / TRAIN_FILE, out_dir / EVAL_FILE) if p.exists()]
    if existing and not force:
        raise _refuse(f"{existing[0]} exists: --force overwrites it")
    name, tokenizer = _tokenizer(settings, model)  # first: a model that does not load fails before the reading
    prep = _read(source, near_dup_threshold if near_dups else None)
    report = prep.report
    if report.issues:
        show_issues(f"{escape(str(source))}: {report.invalid} bad line(s), left out",
                    [(escape(i.where()), escape(i.message)) for i in report.issues])
    if strict and report.invalid:
        raise _refuse(f"--strict: {report.invalid} bad line(s); nothing was written")
    if not prep.examples:
        raise _refuse(f"{source}: no valid example to write ({report.valid} valid line(s), "
                      f"{sum(report.dropped.values())} dropped)")
    train, held = split(len(prep.examples), train_ratio, seed)
    splits = {"train": [(custom_id(False, k), prep.examples[i]) for k, i in enumerate(train, 1)],
              "eval": [(custom_id(True, k), prep.examples[i]) for k, i in enumerate(held, 1)]}
    del prep
    measured = _measure(tokenizer, splits, max_seq_len)
    settings_used = {"train_ratio": train_ratio, "seed": seed, "near_dups": near_dups,
                     "near_dup_threshold": near_dup_threshold, "shingle_words": SHINGLE_WORDS, "num_perm": NUM_PERM,
                     "max_seq_len": max_seq_len, "strict": strict, "assistant_only": True}
    stats = _stats(source, name, settings_used, report, splits, measured)
    _write(out_dir, splits, stats)
    _show(out_dir, report, splits, measured, max_seq_len)


# ## Reading


def _read(source: Path, near_threshold: float | None) -> Preparer:
    """Every line through the Preparer, with a progress bar over the file's bytes."""
    try:
        size = source.stat().st_size
        if not source.is_file():
            raise _refuse(f"{source} is not a file")
        if size > MAX_FILE_BYTES:
            raise _refuse(f"{source} is {size} bytes: at most {MAX_FILE_BYTES} (split it, and prepare each part)")
        try:
            prep = Preparer(near_threshold)
        except ConfigError as e:
            raise _refuse(str(e)) from None
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                       console=err)
        with source.open("rb") as f, bar:
            task = bar.add_task("reading", total=size)
            for n, raw in iter_lines(f):
                prep.add(n, raw)
                if n % 512 == 0:
                    bar.update(task, completed=f.tell())
            bar.update(task, completed=size)
    except OSError as e:
        raise _refuse(f"cannot read {source}: {e}") from None
    return prep


# ## Tokens


def _tokenizer(settings: Settings, model: str | None) -> tuple[str, Any]:
    """(what was loaded, its tokenizer): --model, else the engine's model (baked, MODEL_NAME or the embedded
    one). A hub id is looked up on the hub unless HF_HUB_OFFLINE; a local directory never is."""
    from handler.engine.tokens import hub_cache, load_tokenizer, tokenizer_source

    try:
        name, local, revision = tokenizer_source(settings, model)
        with err.status(f"loading the tokenizer of {escape(name)}..."):
            return name, load_tokenizer(name, local, revision, settings.trust_remote_code, hub_cache(settings))
    except (OSError, ValueError, ConfigError) as e:
        raise _refuse(f"cannot load the tokenizer of {model or settings.model_name or DEFAULT_MODEL_NAME}: {e}") \
            from None


@dataclass
class Measured:
    """Each split's token statistics, and the examples over the sequence length."""

    stats: dict[str, TokenStats] = field(default_factory=dict)
    #: examples over max_seq_len, and those of them whose assistant tokens all fall past it
    long: int = 0
    long_without_targets: int = 0
    #: (custom_id, line, tokens) of the first LONG_SHOWN of them
    named: list[tuple[str, int, int]] = field(default_factory=list)


def _measure(tokenizer: Any, splits: dict[str, list[tuple[str, Example]]], max_seq_len: int) -> Measured:
    """Every example through `encode` (the chat template, assistant mask included), with a progress bar."""
    from handler.training.tokenize import encode

    m = Measured()
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err)
    with bar:
        task = bar.add_task("tokenizing", total=sum(len(rows) for rows in splits.values()))
        for name, rows in splits.items():
            tokens, assistant = [], []
            for k, (cid, example) in enumerate(rows, 1):
                enc = encode(tokenizer, example.messages())
                tokens.append(enc.tokens)
                assistant.append(enc.assistant_tokens)
                if enc.tokens > max_seq_len:
                    m.long += 1
                    m.long_without_targets += not any(enc.assistant_masks[:max_seq_len])
                    if len(m.named) < LONG_SHOWN:
                        m.named.append((cid, example.line, enc.tokens))
                if k % 256 == 0:
                    bar.advance(task, 256)
            bar.advance(task, len(rows) % 256)
            m.stats[name] = TokenStats.of(tokens, assistant)
    return m


# ## Writing and showing


def _stats(source: Path, model: str, settings_used: dict[str, Any], report: Report,
           splits: dict[str, list[tuple[str, Example]]], m: Measured) -> dict[str, Any]:
    doc = report.as_dict()
    doc["counts"].update(kept=sum(len(rows) for rows in splits.values()), train=len(splits["train"]),
                         eval=len(splits["eval"]))
    return {"input": str(source), "model": model, "settings": settings_used, **doc,
            "tokens": {name: s.model_dump() for name, s in m.stats.items()},
            "over_max_seq_len": {"count": m.long, "no_assistant_tokens_left": m.long_without_targets,
                                 "examples": [{"custom_id": c, "line": n, "tokens": t} for c, n, t in m.named]}}


def _write(out_dir: Path, splits: dict[str, list[tuple[str, Example]]], stats: dict[str, Any]) -> None:
    """Each file written beside its place, then moved there: a failed run leaves no half-written split."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for filename, rows in ((TRAIN_FILE, splits["train"]), (EVAL_FILE, splits["eval"])):
            _replace(out_dir / filename, (output_line(cid, ex) + "\n" for cid, ex in rows))
        _replace(out_dir / STATS_FILE, [json.dumps(stats, ensure_ascii=False, indent=2) + "\n"])
    except OSError as e:
        raise _refuse(f"cannot write to {out_dir}: {e}") from None


def _replace(path: Path, lines: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def _show(out_dir: Path, r: Report, splits: dict[str, list[tuple[str, Example]]], m: Measured,
          max_seq_len: int) -> None:
    dropped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(r.dropped.items()) if n)
    out.print(f"read {r.lines} line(s): {r.valid} valid, {r.invalid} bad, {r.blank} blank; "
              f"dropped {dropped or 'none'}; {r.converted} from prompt/completion, {r.cleaned} cleaned")
    if r.ignored_keys:
        keys = ", ".join(f"{k} ({n})" for k, n in r.ignored_keys.most_common(5))
        err.print(f"[yellow]ignored keys:[/] {escape(keys)}")
    table = Table(title=escape(f"{out_dir}: {len(splits['train'])} train, {len(splits['eval'])} eval"))
    for col in ("split", "examples", "tokens", "assistant", "min", "mean", "p50", "p95", "max"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, s in m.stats.items():
        table.add_row(name, str(s.examples), str(s.tokens), str(s.assistant_tokens), str(s.min), f"{s.mean:.1f}",
                      str(s.p50), str(s.p95), str(s.max))
    out.print(table)
    if m.long:
        named = ", ".join(f"{c} (line {n}, {t} tokens)" for c, n, t in m.named)
        lost = f"; {m.long_without_targets} of them keep no assistant token" if m.long_without_targets else ""
        err.print(f"[yellow]warning: {m.long} example(s) are longer than --max-seq-len {max_seq_len} tokens and "
                  f"would be truncated{lost}: {named}{', ...' if m.long > len(m.named) else ''}[/]")
