"""Read JSON from outside (a file, a request body): every problem becomes an Issue that names the line.

Plain `json.loads` let three things through: bytes that are not UTF-8 gave an error naming a byte
offset; nesting 100k deep raised RecursionError (a 500 at the API); and nesting a few hundred deep
parsed, then failed later when the job was serialized (pydantic stops at 255 levels). Here:

- `decode_utf8` names the line, column and field (`items.1.prompt`) of the first bad byte;
- `loads_line` and `loads_document` refuse nesting deeper than `MAX_DEPTH`, naming the line;
- `loads_document` decodes a document's top-level lists (a job's `items`) one element at a time:
  each decode is one short C call, so a worker thread parsing a 30 MB body never holds the GIL for
  long (json.loads of it in one call held it for about 250 ms).
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.contracts.errors import InputError, Issue

#: how deep JSON may nest (a job document, its items, their fields, a schema inside them)
MAX_DEPTH = 64

_WS = re.compile(r"[ \t\n\r]*")
_BAD_BYTE = re.compile("[\udc80-\udcff]")
_DECODER = json.JSONDecoder()


class JsonProblem(ValueError):
    """JSON that cannot be read; `issue` names where. `key` is the top-level key being read, if any."""

    def __init__(self, issue: Issue, key: str | None = None):
        super().__init__(str(issue))
        self.issue = issue
        self.key = key


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# ## Bytes


def decode_utf8(raw: bytes) -> str:
    """The text of `raw`; InputError naming the line, column and field of the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        message = f"not UTF-8: byte 0x{raw[e.start]:02x} at column {column} (bytes) is not valid UTF-8 ({e.reason})"
        raise InputError([Issue(message, field=_field_of_bad_byte(raw, line), line=line)]) from None


def _field_of_bad_byte(raw: bytes, line: int) -> str:
    """The path of the first string (key or value) holding a bad byte: in the whole document, else in its line."""
    text = raw.decode("utf-8", "surrogateescape")
    lines = text.splitlines()
    for candidate in (text, lines[line - 1] if line <= len(lines) else ""):
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        path = _first_path(value, lambda s: bool(_BAD_BYTE.search(s)))
        if path is not None:
            return path
    return ""


def _first_path(value: Any, hit: Any) -> str | None:
    """The dotted path of the first string (in document order) for which `hit` is true."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if hit(node):
                return where
        elif isinstance(node, dict | list):
            pairs = list(node.items() if isinstance(node, dict) else enumerate(node))
            for key, child in reversed(pairs):
                at = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and hit(key):
                    return at
                stack.append((child, at))
    return None


# ## Nesting


def too_deep(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The path at which `value` nests deeper than `limit` levels, or None. Iterative; visits containers only."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > limit:
            return where or "(root)"
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            if isinstance(child, dict | list) and child:
                stack.append((child, depth + 1, f"{where}.{key}" if where else str(key)))
    return None


def _deep_issue(line: int | None, field: str = "") -> Issue:
    return Issue(f"JSON nested deeper than {MAX_DEPTH} levels", field=field, line=line)


def _checked(value: Any, at: int | tuple[str, int], depth: int, path: str) -> Any:
    """`value`, found at `depth` (1: the document or a JSONL row); JsonProblem if it nests past MAX_DEPTH.
    `at` is the line, or (text, position) to count it from only when there is a problem."""
    if isinstance(value, dict | list):
        where = too_deep(value, MAX_DEPTH - depth + 1)
        if where is not None:
            line = at if isinstance(at, int) else line_of(*at)
            field = path or where.split(".", 1)[0]  # where it starts: the full path can be 64 segments long
            raise JsonProblem(_deep_issue(line, field), path.split(".", 1)[0] or None)
    return value


# ## Lines and documents


def loads_line(text: str, line: int) -> Any:
    """One JSON value on one line (a JSONL row); JsonProblem naming the line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise JsonProblem(Issue(f"not valid JSON: {e.msg} (column {e.colno})", line=line)) from None
    except RecursionError:
        raise JsonProblem(_deep_issue(line)) from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise JsonProblem(Issue(f"not valid JSON: {e}", line=line)) from None
    return _checked(value, line, 1, "")


def loads_document(text: str) -> Any:
    """A whole JSON document, decoded in pieces: its objects key by key (down to `_PIECE_DEPTH`) and its
    top-level lists element by element. JsonProblem names the line (and the top-level key being read)."""
    pos = _WS.match(text).end()
    if not text.startswith("{", pos):
        return _checked(_decode_whole(text), 1, 0, "")
    doc, pos = _object_at(text, pos, "", 1)
    pos = _WS.match(text, pos).end()
    if pos != len(text):
        raise _syntax(text, pos, "Extra data", None)
    return doc


#: objects are decoded key by key this deep (a schema's `properties` sit at level 4); deeper, whole
_PIECE_DEPTH = 6


def _object_at(text: str, pos: int, path: str, depth: int) -> tuple[dict[str, Any], int]:
    top = path.split(".", 1)[0] or None
    doc: dict[str, Any] = {}
    pos = _WS.match(text, pos + 1).end()
    if text.startswith("}", pos):
        return doc, pos + 1
    while True:
        key, pos = _value_at(text, pos, top)
        if not isinstance(key, str):
            raise _syntax(text, pos, "Expecting property name enclosed in double quotes", top)
        at = f"{path}.{key}" if path else key
        pos = _WS.match(text, pos).end()
        if not text.startswith(":", pos):
            raise _syntax(text, pos, "Expecting ':' delimiter", top or key)
        pos = _WS.match(text, pos + 1).end()
        if text.startswith("{", pos) and depth < min(_PIECE_DEPTH, MAX_DEPTH):
            doc[key], pos = _object_at(text, pos, at, depth + 1)
        elif text.startswith("[", pos) and depth == 1:
            doc[key], pos = _list_at(text, pos, at)
        else:
            start = pos
            value, pos = _value_at(text, pos, top or key)
            doc[key] = _checked(value, (text, start), depth, at)
        pos = _WS.match(text, pos).end()
        if text.startswith("}", pos):
            return doc, pos + 1
        if not text.startswith(",", pos):
            raise _syntax(text, pos, "Expecting ',' delimiter", top or key)
        pos = _WS.match(text, pos + 1).end()


def _list_at(text: str, pos: int, key: str) -> tuple[list[Any], int]:
    out: list[Any] = []
    pos = _WS.match(text, pos + 1).end()
    if text.startswith("]", pos):
        return out, pos + 1
    while True:
        start = pos
        value, pos = _value_at(text, pos, key)
        out.append(_checked(value, (text, start), 2, f"{key}.{len(out)}"))
        pos = _WS.match(text, pos).end()
        if text.startswith("]", pos):
            return out, pos + 1
        if not text.startswith(",", pos):
            raise _syntax(text, pos, "Expecting ',' delimiter", key)
        pos = _WS.match(text, pos + 1).end()


def _value_at(text: str, pos: int, key: str | None) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        raise _syntax(text, e.pos, e.msg, key) from None
    except RecursionError:
        raise JsonProblem(_deep_issue(line_of(text, pos), key or ""), key) from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise _syntax(text, pos, str(e), key) from None


def _decode_whole(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _syntax(text, e.pos, e.msg, None) from None
    except RecursionError:
        raise JsonProblem(_deep_issue(1)) from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise _syntax(text, 0, str(e), None) from None


def _syntax(text: str, pos: int, msg: str, key: str | None) -> JsonProblem:
    line = line_of(text, pos)
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return JsonProblem(Issue(f"not valid JSON: {msg} (line {line}, column {column})", line=line), key)
