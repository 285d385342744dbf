"""A quick "valid" for the `json_schema` assertion: jsonschema's Draft 2020-12 validator takes about 16 µs to
pass a small object (most outputs pass), walking the same keywords here takes about 2 µs.

`valid(schema, doc)` is True only where jsonschema finds no error: it reads a few keywords (`type`,
`properties`, `required`, `additionalProperties`, `items`, the bounds, the annotations) exactly as
jsonschema's `_keywords` do, and says False for anything else (another keyword, a value JSON does not
make), where jsonschema then decides and gives its message. So a verdict never differs from
jsonschema's (tests/evals/test_quickschema.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: the types json.loads makes: anything else is left to jsonschema
_PLAIN = {dict, list, str, int, float, bool, type(None)}


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


#: Draft 2020-12's types (jsonschema's `draft202012_type_checker`), for the plain types
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()),
    "number": _number,
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


def _type(types: Any, x: Any, schema: dict[str, Any]) -> bool:
    return any(_TYPES.get(t, _never)(x) for t in (types if isinstance(types, list) else [types]))


def _never(x: Any) -> bool:
    return False


def _properties(properties: dict[str, Any], x: Any, schema: dict[str, Any]) -> bool:
    return not isinstance(x, dict) or all(valid(sub, x[k]) for k, sub in properties.items() if k in x)


def _additional(extra: Any, x: Any, schema: dict[str, Any]) -> bool:
    if not isinstance(x, dict) or extra is True:
        return True
    known = schema.get("properties", {})
    extras = [k for k in x if k not in known]
    return all(valid(extra, x[k]) for k in extras) if isinstance(extra, dict) else not extras


def _items(items: Any, x: Any, schema: dict[str, Any]) -> bool:
    return not isinstance(x, list) or all(valid(items, each) for each in x)


#: keyword -> (its value, the instance, the schema) -> no error; a keyword not here: ask jsonschema
_KEYWORDS: dict[str, Callable[[Any, Any, dict[str, Any]], bool]] = {
    "type": _type,
    "properties": _properties,
    "required": lambda req, x, s: not isinstance(x, dict) or all(k in x for k in req),
    "additionalProperties": _additional,
    "items": _items,
    "minimum": lambda m, x, s: not _number(x) or not x < m,
    "maximum": lambda m, x, s: not _number(x) or not x > m,
    "exclusiveMinimum": lambda m, x, s: not _number(x) or not x <= m,
    "exclusiveMaximum": lambda m, x, s: not _number(x) or not x >= m,
    "minLength": lambda m, x, s: not isinstance(x, str) or not len(x) < m,
    "maxLength": lambda m, x, s: not isinstance(x, str) or not len(x) > m,
    "minItems": lambda m, x, s: not isinstance(x, list) or not len(x) < m,
    "maxItems": lambda m, x, s: not isinstance(x, list) or not len(x) > m,
    **dict.fromkeys(("title", "description", "$comment", "examples", "default"), lambda v, x, s: True),
}


def valid(schema: Any, doc: Any) -> bool:
    """True only where jsonschema's Draft 2020-12 validator finds `doc` valid against `schema` (a schema it
    has checked); False where it may not, or where this cannot tell."""
    if schema is True:
        return True
    if not isinstance(schema, dict) or type(doc) not in _PLAIN:
        return False
    for key, value in schema.items():
        keyword = _KEYWORDS.get(key)
        if keyword is None or not keyword(value, doc, schema):
            return False
    return True
