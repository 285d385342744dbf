"""LoRA adapters in the store (issue 15): put, get, list and remove by name; a put again replaces the
base model and path and keeps when it was first recorded. A trained adapter (issue 16) also keeps its
training config, metrics (JSON objects) and job; an engine publishing its ADAPTERS_DIR records only names
the store does not list yet, so it never wipes them. Run against SQLite, Postgres and Supabase
(supabase-py -> PostgREST adapter -> real Postgres)."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from handler.adapters import publish
from shared.contracts.adapters import AdapterRecord
from shared.stores.sqlite import SQLiteStore


async def test_put_get_list_and_remove(store):
    assert await store.list_adapters() == []
    assert await store.get_adapter("grader") is None
    await store.put_adapter(AdapterRecord(name="grader", base_model="org/base", path="/adapters/grader"))
    await store.put_adapter(AdapterRecord(name="anon-base", path="/adapters/x"))  # a base not said
    got = await store.get_adapter("grader")
    assert (got.name, got.base_model, got.path) == ("grader", "org/base", "/adapters/grader")
    assert got.created_at is not None
    assert [a.name for a in await store.list_adapters()] == ["anon-base", "grader"]
    assert (await store.get_adapter("anon-base")).base_model is None
    assert await store.remove_adapter("grader") is True
    assert await store.remove_adapter("grader") is False
    assert [a.name for a in await store.list_adapters()] == ["anon-base"]


async def test_a_put_again_replaces_path_and_base_and_keeps_created_at(store):
    await store.put_adapter(AdapterRecord(name="a", base_model="org/one", path="/v1/a"))
    first = await store.get_adapter("a")
    await asyncio.sleep(0.01)
    await store.put_adapter(AdapterRecord(name="a", base_model="org/two", path="/v2/a"))
    again = await store.get_adapter("a")
    assert (again.base_model, again.path) == ("org/two", "/v2/a")
    assert again.created_at == first.created_at
    assert len(await store.list_adapters()) == 1


async def test_names_with_odd_characters_round_trip(store):
    names = ["a.b-c_d:1", "Z9", "x" * 128]
    for n in names:
        await store.put_adapter(AdapterRecord(name=n, path=f"/adapters/{n}"))
    assert sorted(a.name for a in await store.list_adapters()) == sorted(names)
    for n in names:
        assert (await store.get_adapter(n)).path == f"/adapters/{n}"


def test_a_record_refuses_a_bad_name_or_an_empty_path():
    for bad in ("", "-lead", "has space", "a/b", "x" * 129):
        with pytest.raises(ValidationError):
            AdapterRecord(name=bad, path="/p")
    with pytest.raises(ValidationError):
        AdapterRecord(name="ok", path="")


# ## A trained adapter's config, metrics and job (issue 16)

CONFIG = {"base_model": "org/base", "lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]},
          "epochs": 1.5, "data": "file-ünï", "packing": False, "seed": None}
METRICS = {"base_perplexity": 12.3, "adapter_perplexity": 8.1, "steps": 30, "losses": [[1, 2.5], [30, 1.25]],
           "eval_loss": None}


def trained(name: str = "tuned", **kw) -> AdapterRecord:
    return AdapterRecord(name=name, base_model="org/base", path=f"/vol/{name}", config=CONFIG, metrics=METRICS,
                         job_id="train-1", **kw)


async def test_a_trained_adapter_round_trips_its_config_metrics_and_job(store):
    await store.put_adapter(trained())
    await store.put_adapter(AdapterRecord(name="by-hand", path="/vol/by-hand"))
    got = await store.get_adapter("tuned")
    assert (got.config, got.metrics, got.job_id) == (CONFIG, METRICS, "train-1")
    assert isinstance(got.config["lora"], dict) and got.metrics["steps"] == 30
    hand = await store.get_adapter("by-hand")
    assert (hand.config, hand.metrics, hand.job_id) == (None, None, None)
    listed = {a.name: a for a in await store.list_adapters()}
    assert listed["tuned"].model_dump(exclude={"created_at"}) == trained().model_dump(exclude={"created_at"})
    assert listed["by-hand"].metrics is None
    await store.put_adapter(AdapterRecord(name="empty", path="/vol/e", config={}, metrics={}))
    empty = await store.get_adapter("empty")
    assert (empty.config, empty.metrics) == ({}, {})  # an empty object is not None


async def test_a_put_again_replaces_config_metrics_and_job_and_keeps_created_at(store):
    await store.put_adapter(trained())
    first = await store.get_adapter("tuned")
    await asyncio.sleep(0.01)
    retrained = trained().model_copy(update={"path": "/vol/tuned-2", "metrics": {"steps": 60}, "job_id": "train-2",
                                             "config": {"epochs": 3}})
    await store.put_adapter(retrained)
    again = await store.get_adapter("tuned")
    assert (again.path, again.config, again.metrics, again.job_id) == ("/vol/tuned-2", {"epochs": 3}, {"steps": 60},
                                                                       "train-2")
    assert again.created_at == first.created_at
    # a put by hand (`llm-jobs adapters add`) says what the adapter is now: the training record goes
    await store.put_adapter(AdapterRecord(name="tuned", base_model="org/base", path="/vol/by-hand"))
    hand = await store.get_adapter("tuned")
    assert (hand.path, hand.config, hand.metrics, hand.job_id) == ("/vol/by-hand", None, None, None)
    assert hand.created_at == first.created_at
    assert len(await store.list_adapters()) == 1


async def test_a_put_without_replace_records_only_a_new_name(store):
    await store.put_adapter(trained())
    before = await store.get_adapter("tuned")
    await store.put_adapter(AdapterRecord(name="tuned", base_model="org/other", path="/elsewhere"), replace=False)
    assert await store.get_adapter("tuned") == before  # all of it, config, metrics and job included
    await store.put_adapter(AdapterRecord(name="new", base_model="org/b", path="/vol/new"), replace=False)
    new = await store.get_adapter("new")
    assert (new.base_model, new.path, new.metrics) == ("org/b", "/vol/new", None) and new.created_at is not None


class _Engine:
    """An engine as `publish` sees it: its ADAPTERS_DIR's adapters (weakly referenced, hence a class)."""

    def __init__(self, found_adapters: dict[str, Path]) -> None:
        self.found_adapters = found_adapters


def _adapter_dir(root: Path, name: str, base: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    return d


async def test_publishing_adapters_dir_never_wipes_a_trained_adapters_record(store, tmp_path):
    # a training job wrote its adapter into the volume that is ADAPTERS_DIR, and recorded it
    made = {n: _adapter_dir(tmp_path / "adapters", n, "org/base") for n in ("tuned", "plain")}
    await store.put_adapter(trained().model_copy(update={"path": str(made["tuned"])}))
    before = await store.get_adapter("tuned")
    engine = _Engine(made)  # an engine booting over that volume
    await publish(engine, store)
    assert await store.get_adapter("tuned") == before
    plain = await store.get_adapter("plain")  # a name the store did not know goes in, as it did
    assert (plain.base_model, plain.path, plain.config, plain.metrics, plain.job_id) == (
        "org/base", str(made["plain"]), None, None, None)
    # nor does another engine's boot move a path recorded by hand
    await store.put_adapter(AdapterRecord(name="plain", base_model="org/base", path="/runpod-volume/plain"))
    await publish(_Engine(made), store)
    assert (await store.get_adapter("plain")).path == "/runpod-volume/plain"
    assert await store.get_adapter("tuned") == before


def test_a_record_refuses_what_json_cannot_say_and_a_bad_job_id():
    for bad in ({"metrics": {"loss": math.nan}}, {"metrics": {"loss": math.inf}}, {"config": {"at": object()}},
                {"config": [1, 2]}, {"metrics": "ppl 8"}, {"job_id": "has space"}, {"job_id": ""}):
        with pytest.raises(ValidationError):
            AdapterRecord(name="ok", path="/p", **bad)
    assert AdapterRecord(name="ok", path="/p", metrics={"loss": None}).metrics == {"loss": None}


async def test_an_old_sqlite_file_gets_the_training_columns(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the adapters table as issue 15 made it
        db.executescript("""
            create table adapters (name text primary key, base_model text, path text not null,
              created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')));
            insert into adapters (name, base_model, path) values ('old', 'org/base', '/vol/old');
        """)
    store = SQLiteStore(path, timeout_s=5)
    try:
        old = await store.get_adapter("old")
        assert (old.path, old.config, old.metrics, old.job_id) == ("/vol/old", None, None, None)
        await store.put_adapter(trained())
        assert (await store.get_adapter("tuned")).metrics == METRICS
    finally:
        await store.close()


def test_the_migration_keeps_config_and_metrics_objects_and_applies_again(pg):
    from testkit.pg import ROOT

    pg.truncate()
    migration = (ROOT / "supabase" / "migrations" / "20261210000000_adapter_training.sql").read_text()
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(migration)  # guarded: it applies again
        for column, value in (("config", "[1]"), ("metrics", '"ppl"'), ("metrics", "3")):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"insert into adapters (name, path, {column}) values ('x', '/x', %s::jsonb)", (value,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("insert into adapters (name, path, job_id) values ('x', '/x', 'bad id')")
        conn.execute("insert into adapters (name, path, metrics) values ('x', '/x', '{\"steps\": 3}')")
    assert pg.query("select metrics ->> 'steps', config, job_id from adapters") == [("3", None, None)]
    pg.truncate()
