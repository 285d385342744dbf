"""LoRA adapters (issue 15): what the store lists, how an adapter's directory is read, and which base it fits.

An adapter is a PEFT directory: `adapter_config.json` (its base model, `base_model_name_or_path`, and
its rank `r`) beside its weights (`adapter_model.safetensors`, or `adapter_model.bin`). The store
lists adapters by name (`AdapterRecord`); ADAPTERS_DIR holds more, one a subdirectory, named after
it. A job or an item names one (`adapter`); the engine loads it before the job's first item runs
(handler/adapters.py).

`read_adapter` and `find_adapters` read files: call them in a thread from async code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from shared.contracts.errors import ErrorCode, InputError, Issue
from shared.contracts.models import ID_PATTERN

CONFIG_FILE = "adapter_config.json"
#: the weights, in the order PEFT writes them
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
#: the most an adapter_config.json may be
MAX_CONFIG_BYTES = 1024 * 1024


class AdapterRecord(BaseModel):
    """An adapter as the store lists it. `config`, `metrics` and `job_id` are a trained adapter's (issue 16):
    None for one recorded by hand (`llm-jobs adapters add`) or found in ADAPTERS_DIR."""

    name: str = Field(pattern=ID_PATTERN)
    #: the model it was trained on (adapter_config.json's base_model_name_or_path); None: not said
    base_model: str | None = Field(default=None, max_length=4096)
    #: its directory, as the engine's machine sees it (a volume's path)
    path: str = Field(min_length=1, max_length=4096)
    created_at: datetime | None = None
    #: the training config it was made with (a JSON object)
    config: dict[str, Any] | None = None
    #: what its training measured (a JSON object: {"base_perplexity": 12.3, "adapter_perplexity": 8.1, ...})
    metrics: dict[str, Any] | None = None
    #: the training job that made it (no reference: the job's row may be gone while the adapter stays)
    job_id: str | None = Field(default=None, pattern=ID_PATTERN)

    @field_validator("config", "metrics")
    @classmethod
    def _json(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """Every backend keeps it as JSON (jsonb on Postgres, which has no NaN or Infinity): refuse what JSON
        cannot say here rather than in one store and not another."""
        if v is not None:
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"not a JSON object: {e}") from None
        return v


@dataclass(frozen=True, slots=True)
class AdapterFiles:
    """What an adapter's directory says about it."""

    path: Path
    base_model: str | None
    #: the largest rank of any of its modules (`r`, and `rank_pattern`'s)
    rank: int


def refused(name: str, message: str, *, unknown: bool = False) -> InputError:
    """The job-level error for an adapter no engine here can use (field `adapter`)."""
    return InputError([Issue(f"adapter '{name}': {message}", field="adapter",
                             code=ErrorCode.model_not_found if unknown else ErrorCode.invalid_item)])


def read_adapter(path: Path) -> AdapterFiles:
    """The adapter in `path`; ValueError says what is missing or wrong. Reads files: not on an event loop."""
    config = path / CONFIG_FILE
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    if not config.is_file():
        raise ValueError(f"{path} has no {CONFIG_FILE}: not a PEFT adapter")
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        raise ValueError(f"{path} has no weights ({' or '.join(WEIGHT_FILES)})")
    if config.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{config} is over {MAX_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {config}: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{config} is not a JSON object")
    return AdapterFiles(path, _text(doc.get("base_model_name_or_path")), _rank(doc))


def _text(v: Any) -> str | None:
    return v.strip() or None if isinstance(v, str) else None


def _rank(doc: dict[str, Any]) -> int:
    ranks = [doc.get("r"), *((doc.get("rank_pattern") or {}).values())]
    return max((r for r in ranks if isinstance(r, int) and not isinstance(r, bool)), default=0)


def find_adapters(directory: Path) -> dict[str, Path]:
    """ADAPTERS_DIR's adapters, by name: each subdirectory holding an adapter_config.json whose name is a
    valid adapter name. A directory that is not there holds none. Reads the directory: not on an event loop."""
    if not directory.is_dir():
        return {}
    return {d.name: d for d in sorted(directory.iterdir())
            if re.match(ID_PATTERN, d.name) and (d / CONFIG_FILE).is_file()}


def _key(name: str) -> str:
    return name.strip().rstrip("/").lower()


def model_names(path: str | None, *ids: str | None) -> frozenset[str]:
    """The names a served model goes by, for `fits_base`: the path it was loaded from, and each id (a hub
    repo id, a served name) with its last part (`org/Model` is `model` too). Lowercase."""
    names = {_key(path)} if path else set()
    for i in ids:
        if i:
            names |= {_key(i), _key(i).rsplit("/", 1)[-1]}
    return frozenset(n for n in names if n)


def fits_base(base_model: str | None, names: frozenset[str]) -> bool:
    """Was an adapter whose base is `base_model` made for the model that goes by `names` (`model_names`)? The
    same path or id, or the same last part (`HuggingFaceTB/SmolLM2-135M-Instruct` and a served
    `SmolLM2-135M-Instruct`). An adapter that does not say fits any."""
    if not base_model:
        return True
    key = _key(base_model)
    return key in names or key.rsplit("/", 1)[-1] in names


def model_list(base: str, adapters: Iterable[AdapterRecord | str]) -> dict[str, Any]:
    """OpenAI's model list (`GET /v1/models`): the base model, then each adapter, its `parent` the base."""
    data: list[dict[str, Any]] = [{"id": base, "object": "model", "created": 0, "owned_by": "llm-jobs",
                                   "parent": None}]
    for a in adapters:
        name, at = (a, None) if isinstance(a, str) else (a.name, a.created_at)
        data.append({"id": name, "object": "model", "created": int(at.timestamp()) if at else 0,
                     "owned_by": "llm-jobs", "parent": base})
    return {"object": "list", "data": data}
