"""The quick "valid" of the `json_schema` assertion (shared/evals/quickschema.py) never says valid where
jsonschema does not, and says it for the plain schemas and outputs it is there for."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import pytest

from shared.contracts.prepare import Limits, schema_validator
from shared.evals.quickschema import valid

SCHEMAS: list[Any] = [
    {"type": "object", "additionalProperties": False, "required": ["nota", "feedback"],
     "properties": {"nota": {"type": "integer", "minimum": 0, "maximum": 10},
                    "feedback": {"type": "string", "minLength": 10}}},
    {"type": "object", "properties": {"x": {"type": ["number", "null"], "exclusiveMinimum": 0,
                                            "exclusiveMaximum": 1}},
     "additionalProperties": {"type": "boolean"}, "title": "t", "description": "d"},
    {"type": "array", "items": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string",
                                                                                          "maxLength": 3}}},
     "minItems": 1, "maxItems": 3},
    {"type": "array", "items": False},
    {"type": "object", "properties": {"a": True, "b": False}},
    {"properties": {"n": {"type": "integer"}}, "required": ["n"]},
    True,
    False,
    {},
]
#: keywords the quick check leaves to jsonschema: it never says valid where it meets one
NESTED: list[Any] = [{"type": "object", "properties": {"a": {"enum": [1, 2]}}}]
ASKED: list[Any] = [
    {"type": "string", "pattern": "^a"},
    {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"},
    {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}},
    {"type": "object", "patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False},
    {"type": "string", "format": "email"},
]
VALUES: list[Any] = [None, True, False, 0, 1, -1, 3, 10, 11, 1.0, 2.5, 0.5, -0.0, 1e308, math.inf, math.nan, "", "ab",
                     "abcd", "àvia és", [], [1], {}, {"a": "x"}, {"a": "abcd"}, {"nota": 5}, {"feedback": "x" * 12},
                     Decimal("5")]


def doc(rng: random.Random, depth: int = 0) -> Any:
    """A random document, mostly shaped like the schemas' (and now and then not JSON's: a Decimal)."""
    roll = rng.random()
    if depth < 2 and roll < 0.3:
        keys = rng.sample(["nota", "feedback", "x", "a", "b", "n", "extra"], rng.randint(0, 4))
        return {k: doc(rng, depth + 1) for k in keys}
    if depth < 2 and roll < 0.45:
        return [doc(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice([*VALUES, "x" * rng.randint(0, 15), rng.randint(-2, 12), rng.random()])


@pytest.mark.parametrize("schema", SCHEMAS + NESTED + ASKED)
def test_never_valid_where_jsonschema_finds_an_error(schema):
    validator = schema_validator(schema, Limits())
    rng = random.Random(5)
    said = 0
    for _ in range(3000):
        d = doc(rng)
        if valid(schema, d):
            said += 1
            assert validator.is_valid(d), (schema, d)
        elif schema in SCHEMAS and not isinstance(d, Decimal) and "Decimal" not in repr(d):
            assert not validator.is_valid(d), (schema, d)  # plain schema, plain document: the same verdict
    if schema in ASKED:
        assert said == 0


def test_the_benchmarks_outputs():
    schema = SCHEMAS[0]
    assert valid(schema, {"nota": 7, "feedback": "Una bona redacció."})
    assert not valid(schema, {"nota": "7", "feedback": "Una bona redacció."})
    assert not valid(schema, {"nota": 7, "feedback": "Una bona redacció.", "x": 1})
    assert not valid(schema, {"nota": 11, "feedback": "Una bona redacció."})
    assert valid({"type": "integer"}, 3.0) and not valid({"type": "integer"}, True)
