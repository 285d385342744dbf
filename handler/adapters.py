"""The adapters a job names, ready before any of its items runs (README, "LoRA adapters").

`prepare` is what the runner calls when a run begins, after the job's builder and before `begin`:

- the engine's ADAPTERS_DIR adapters go in the store, once per engine and store (`publish`), so that
  `llm-jobs adapters list`, `GET /v1/models` and other engines see them: only the names the store does not
  list yet, so a trained adapter's record (its config, metrics and job) is never overwritten by its directory;
- it gathers the adapters the job names: the job's own, and its items' (a whole job's from memory; a shard's
  read from the store page by page, when the engine serves adapters at all: only the names are kept);
- each one the engine has not loaded is found (the engine's ADAPTERS_DIR first, then the store) and loaded
  (`Engine.add_adapter`: its base model, its rank and vLLM's own checks).

An adapter that is unknown, made for another base model, or refused is an InputError naming it: the job
fails before any item runs, as a job naming a model that is not served does. `require` does the same for
a page of a shard whose items name an adapter not loaded yet (an engine that serves none).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shared.contracts.adapters import AdapterRecord, read_adapter, refused
from shared.contracts.errors import StoreError
from shared.contracts.models import Item, Job
from shared.contracts.shards import ShardRef
from shared.stores.base import Store, retrying

log = logging.getLogger(__name__)

#: engine -> ids of the stores its ADAPTERS_DIR adapters went into
_published: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


def loaded(engine: Any) -> frozenset[str]:
    """The adapters the engine has loaded (an engine without adapter support: none)."""
    return getattr(engine, "adapters", frozenset())


def found(engine: Any) -> Mapping[str, Path]:
    return getattr(engine, "found_adapters", {})


def named(items: Iterable[Item | Any]) -> set[str]:
    """The adapters these items name (rows that are not items name none)."""
    return {i.adapter for i in items if isinstance(i, Item) and i.adapter}


async def publish(engine: Any, store: Store) -> None:
    """Put the engine's ADAPTERS_DIR adapters in the store, once per engine and store, each only if the store
    has none of its name (`put_adapter(replace=False)`, shared/stores/adapters.py): a directory says less than
    a record made by hand or by training, and this engine loads its own copy first anyway. A store that fails
    is logged: a job that names none of them must not fail for it."""
    dirs = found(engine)
    seen = _published.setdefault(engine, set())
    if not dirs or id(store) in seen:
        return
    seen.add(id(store))
    for name, path in dirs.items():
        try:
            files = await asyncio.to_thread(read_adapter, path)
        except ValueError as e:
            log.warning("ADAPTERS_DIR: %s is not listed: %s", name, e)
            continue
        try:
            await store.put_adapter(AdapterRecord(name=name, base_model=files.base_model, path=str(path)),
                                    replace=False)
        except StoreError as e:
            log.warning("ADAPTERS_DIR: %s could not be listed in the store: %s", name, e)
            seen.discard(id(store))


async def _shard_names(store: Store, ref: ShardRef, page_items: int, retry_s: float) -> set[str]:
    """The adapters a shard's staged items name, read a page at a time (only the names are kept)."""
    names: set[str] = set()
    at = ref.start
    while at < ref.end:
        page = await retrying(lambda at=at: store.read_items(ref.job_id, start_idx=at, end_idx=ref.end,
                                                             limit=page_items), within_s=retry_s)
        if not page:
            break  # the run itself says which items are missing
        names |= named(page)
        at += len(page)
    return names


async def require(engine: Any, store: Store | None, names: Iterable[str], *, retry_s: float) -> None:
    """Load every adapter in `names` the engine has not loaded yet; InputError for one it cannot serve."""
    for name in sorted(set(names) - loaded(engine)):
        path, base = found(engine).get(name), None
        if path is None and store is not None:
            rec = await retrying(lambda name=name: store.get_adapter(name), within_s=retry_s)
            if rec is not None:
                path, base = rec.path, rec.base_model
        if path is None:
            raise refused(name, f"no adapter of that name (known: {await _known(engine, store, retry_s)})",
                          unknown=True)
        add = getattr(engine, "add_adapter", None)
        if add is None:
            raise refused(name, "this engine serves no adapters")
        await add(name, str(path), base)


async def _known(engine: Any, store: Store | None, retry_s: float) -> str:
    names = set(loaded(engine)) | set(found(engine))
    if store is not None:
        names |= {a.name for a in await retrying(store.list_adapters, within_s=retry_s)}
    shown = sorted(names)
    return (", ".join(shown[:20]) + (", ..." if len(shown) > 20 else "")) if shown else "none"


async def prepare(engine: Any, store: Store | None, job: Job, ref: ShardRef | None, *, page_items: int,
                  retry_s: float) -> None:
    """See the module docstring. Raises InputError (an adapter no engine here can serve), StoreError and
    EngineError."""
    if store is not None:
        await publish(engine, store)
    names = {job.adapter} if job.adapter else set()
    if ref is None:
        names |= named(job.items)
    elif store is not None and getattr(engine, "lora_enabled", False):
        names |= await _shard_names(store, ref, page_items, retry_s)
    if names:
        await require(engine, store, names, retry_s=retry_s)
