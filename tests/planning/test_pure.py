"""shared/planning is layer 1 (docs/architecture.md, "Layers"): the API can plan a job without a tokenizer, an
engine, a web framework or the CLI."""

from __future__ import annotations

from tests.unit.test_layers import HEAVY, STORE_CLIENTS, UPPER, loaded_by, violations


def test_planning_loads_no_engine_tokenizer_or_framework():
    loaded = loaded_by("shared.planning.plan")
    assert not loaded & (HEAVY | STORE_CLIENTS | {"transformers", "torch", "handler", "jinja2"}), sorted(loaded)


def test_planning_imports_no_other_layer():
    assert violations("shared.planning", ("shared.stores", "shared.queue", *UPPER, "handler")) == []
