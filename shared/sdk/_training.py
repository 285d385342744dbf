"""A training job's document from what a caller has (README, "Fine-tuning"): `client.train(...)`.

    doc = training_document("prepared/", adapter="grades-ca", max_steps=30)     # train.jsonl + eval.jsonl
    doc = training_document(examples, held_out=more, adapter="grades-ca")      # lists of {"messages": [...]}

Examples keep a custom_id that already says their split (`train-...`, `eval-...`, as `llm-jobs data
prepare` writes them); the others get one: `train-000001`, ... and `eval-000001`, ... for `held_out`.
The document is validated where it is submitted (shared/contracts/inputs.py): a bad example is named
by its line or index and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.contracts.errors import InputError, Issue
from shared.contracts.jsontext import JsonProblem, decode_utf8, loads_line
from shared.contracts.models import Item, new_job_id
from shared.contracts.training import EVAL_PREFIX, TRAIN_PREFIX

Examples = str | Path | list[dict[str, Any] | Item]
#: the files `llm-jobs data prepare` writes
TRAIN_FILE, EVAL_FILE = "train.jsonl", "eval.jsonl"


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        text = decode_utf8(path.read_bytes())
    except OSError as e:
        raise InputError([Issue(f"cannot read {path}: {e.strerror or e}")]) from None
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = loads_line(line, n)
        except JsonProblem as e:
            raise InputError([Issue(f"{path.name}: {e.issue.message}", line=n)]) from None
        if not isinstance(value, dict):
            raise InputError([Issue(f"{path.name}: an example must be a JSON object", line=n)])
        rows.append(value)
    return rows


def _rows(examples: Examples) -> list[dict[str, Any]]:
    if isinstance(examples, str | Path):
        return _read(Path(examples))
    return [e.model_dump(mode="json", exclude_none=True) if isinstance(e, Item) else dict(e) for e in examples]


def _named(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    out = []
    for n, row in enumerate(rows, start=1):
        cid = row.get("custom_id")
        if not (isinstance(cid, str) and cid.startswith(prefix)):
            row = {**row, "custom_id": f"{prefix}{n:06d}"}
        out.append(row)
    return out


def training_document(data: Examples, *, adapter: str, held_out: Examples | None = None, id: str | None = None,
                      **config: Any) -> dict[str, Any]:
    """The job document of a training job: `data` is a directory `llm-jobs data prepare` wrote (its
    train.jsonl and eval.jsonl), a JSONL file of examples, or a list of them; `config` is TrainConfig's
    fields (shared/contracts/training.py)."""
    if isinstance(data, str | Path) and Path(data).is_dir():
        directory = Path(data)
        if not (directory / TRAIN_FILE).is_file():
            raise InputError([Issue(f"{directory} has no {TRAIN_FILE}: write it with `llm-jobs data prepare`")])
        data = directory / TRAIN_FILE
        if held_out is None and (directory / EVAL_FILE).is_file():
            held_out = directory / EVAL_FILE
    items = _named(_rows(data), TRAIN_PREFIX)
    if held_out is not None:
        items += _named(_rows(held_out), EVAL_PREFIX)
    return {"id": id or new_job_id(), "training": {"adapter": adapter, **config}, "items": items}
