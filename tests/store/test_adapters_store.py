"""LoRA adapters in the store (issue 15): put, get, list and remove by name; a put again replaces the
base model and path and keeps when it was first recorded. Run against SQLite, Postgres and Supabase
(supabase-py -> PostgREST adapter -> real Postgres)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from shared.contracts.adapters import AdapterRecord


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
