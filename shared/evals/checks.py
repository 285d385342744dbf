"""The assertions: promptfoo's vocabulary, in Python.

| type | passes when | score |
|---|---|---|
| `equals` | the output (or its `path`) equals `value` (JSON as JSON; text trimmed) | 1 / 0 |
| `contains`, `icontains` | `value` is in it (icontains: case-folded) | 1 / 0 |
| `contains_any`, `icontains_any` | one of the strings in `value` is in it | 1 / 0 |
| `regex` | `value` matches somewhere in it (run with a time limit) | 1 / 0 |
| `levenshtein` | its edit distance to `value` is at most `threshold` (default 5) | 1 - distance / length |
| `is_json` | it is JSON (with `path`: the path finds something) | 1 / 0 |
| `json_schema` | it is JSON and matches `value`, or the suite's `response_format` schema | 1 / 0 |
| `json_path` | `path` finds `value` (no value: finds anything) | 1 / 0 |
| `rouge_l`, `chrf` | the overlap with `value` is at least `threshold` (default 0.5) | the overlap, 0..1 |
| `finish_reason` | the engine's finish reason is `value` | 1 / 0 |
| `latency_ms` | the item took at most `threshold` ms | 1 / 0 |
| `llm_rubric` | a judge model passes it on `value` (the rubric), scoring at least `threshold` if set | its score |
| `perplexity` | the model's perplexity on `value` (default: `expected`) is at most `threshold` | 1 / 0 |

`not_<type>` inverts the text and JSON ones (`not_icontains: "555-0199"`: no echo of a phone number).
With no `value`, the text ones compare with the case's `expected` (at `path`, when `expected` is JSON).
An item that failed with no output fails every assertion, with its error as the reason.
`llm_rubric` and `perplexity` need the engine: their verdicts and perplexities are worked out by
the eval run and handed in as `Facts`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import jsonpath
import regex
from pydantic import BaseModel
from referencing.exceptions import Unresolvable

from shared.contracts.models import Result
from shared.contracts.prepare import Limits, SchemaError, schema_problem, schema_validator
from shared.evals import quickschema
from shared.evals import text as metrics

if TYPE_CHECKING:
    from shared.evals.suite import Assertion

#: seconds one regular expression may run against one output
REGEX_TIMEOUT_S = 0.1
#: the longest pattern or `value` string an assertion may hold
MAX_VALUE_CHARS = 100_000

TEXT = {"equals", "contains", "icontains", "contains_any", "icontains_any", "regex", "levenshtein"}
JSON = {"is_json", "json_schema", "json_path"}
OVERLAP = {"rouge_l", "chrf"}
FACTS = {"finish_reason", "latency_ms"}
MODEL = {"llm_rubric", "perplexity"}
#: those that look at the engine's facts, not at the output's text (no `path` into it)
_ENGINE = MODEL | FACTS
ASSERTION_TYPES = TEXT | JSON | OVERLAP | FACTS | MODEL
#: those `not_` may invert
NEGATABLE = TEXT | JSON
#: those that compare with a reference: `value`, or the case's `expected`
NEEDS_REFERENCE = {"equals", "levenshtein", "rouge_l", "chrf"}
DEFAULT_THRESHOLD = {"levenshtein": 5.0, "rouge_l": 0.5, "chrf": 0.5}


class Outcome(BaseModel):
    """How one assertion went."""

    type: str
    metric: str
    passed: bool
    score: float
    weight: float
    #: what was measured (a ROUGE-L, a distance, a latency, a perplexity), where there is a number
    value: float | None = None
    reason: str = ""


M = TypeVar("M", bound=BaseModel)


def trusted(cls: type[M], fields: set[str], values: dict[str, Any]) -> M:
    """`cls.model_construct(fields, **values)` for `values` that name every field of `cls` (a plain model: no
    extra, no private attributes) with a value of its type already: no validation, and not pydantic's
    per-field loop either. Scoring makes an Outcome for each assertion of each result and a CaseScore for
    each result: validating them took longer than most assertions, and a fields set of their own (here
    `fields`, shared: it holds every field, so setting one leaves it as it is) was one more object each
    for the garbage collector to walk (tests/evals/test_score_cases.py: they equal the validated ones)."""
    m = object.__new__(cls)
    object.__setattr__(m, "__dict__", values)
    object.__setattr__(m, "__pydantic_fields_set__", fields)
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


_OUTCOME_FIELDS = set(Outcome.model_fields)


def outcome(type: str, metric: str, passed: bool, score: float, weight: float, value: float | None,
            reason: str) -> Outcome:
    """`Outcome(...)` with every field, from values of its types (a number may be an int: it is made a float,
    as validation makes it), built `trusted`."""
    return trusted(Outcome, _OUTCOME_FIELDS, {
        "type": type, "metric": metric, "passed": bool(passed), "score": float(score), "weight": float(weight),
        "value": None if value is None else float(value), "reason": reason})


@dataclass(frozen=True)
class Verdict:
    """A judge's answer to an `llm_rubric` (the `{reason, score, pass}` schema)."""

    passed: bool
    score: float
    reason: str


@dataclass(frozen=True)
class Facts:
    """What the eval run worked out with the engine, by the assertion's index in the case's list."""

    verdicts: Mapping[int, Verdict] = field(default_factory=dict)
    perplexity: Mapping[int, float] = field(default_factory=dict)


_MISSING = object()


@dataclass(frozen=True)
class Output:
    """A result as the assertions see it."""

    text: str | None
    json: Any
    finish_reason: str | None
    latency_ms: float | None
    error: str | None

    @classmethod
    def of(cls, result: Result) -> Output:
        parsed: Any = _MISSING
        if result.parsed is not None:
            parsed = result.parsed
        elif result.text is not None:
            try:
                parsed = json.loads(result.text)
            except ValueError:
                pass
        error = f"{result.error.code}: {result.error.message}" if result.error else None
        return cls(result.text, parsed, result.finish_reason, result.latency_ms, error)


# ## Checked when the suite is read


def path_problem(path: str) -> str | None:
    try:
        _path(path)
    except jsonpath.JSONPathError as e:
        return f"not a valid JSONPath: {str(e).splitlines()[0]}"
    return None


@lru_cache(maxsize=1024)
def _path(path: str) -> Any:
    return jsonpath.compile(path)


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    return regex.compile(pattern)


def check_assertion_config(a: Assertion, response_format: dict[str, Any] | None, limits: Limits
                           ) -> list[tuple[tuple[str, ...], str]]:
    """(field, problem) for each thing wrong with an assertion, before anything runs."""
    out: list[tuple[tuple[str, ...], str]] = []
    base, negated = a.type.removeprefix("not_"), a.type.startswith("not_")
    if negated and base not in NEGATABLE:
        out.append((("type",), f"'{base}' cannot be negated (only {', '.join(sorted(NEGATABLE))})"))
    if isinstance(a.value, str) and len(a.value) > MAX_VALUE_CHARS:
        out.append((("value",), f"over {MAX_VALUE_CHARS} characters"))
    if a.path is not None and (problem := path_problem(a.path)):
        out.append((("path",), problem))
    needs_str = {"contains", "icontains", "regex", "finish_reason", "llm_rubric"}
    if base in needs_str and not isinstance(a.value, str):
        out.append((("value",), f"'{base}' needs a string value"))
    if base in {"contains_any", "icontains_any"} and not (
            isinstance(a.value, list) and a.value and all(isinstance(v, str) for v in a.value)):
        out.append((("value",), f"'{base}' needs a list of strings"))
    if base == "regex" and isinstance(a.value, str):
        try:
            _regex(a.value)
        except regex.error as e:
            out.append((("value",), f"not a valid regular expression: {e}"))
    if base == "json_path" and a.path is None:
        out.append((("path",), "'json_path' needs a path (e.g. $.nota)"))
    if base == "json_schema":
        schema = a.value if a.value is not None else ((response_format or {}).get("json_schema") or {}).get("schema")
        if schema is None:
            out.append((("value",), "'json_schema' needs a schema as its value, or the suite's response_format"))
        else:
            try:
                schema_validator(schema, limits)
            except (SchemaError, Unresolvable) as e:
                out.append((("value",), schema_problem(e) if isinstance(e, SchemaError) else str(e)))
    if base in {"latency_ms", "perplexity"} and a.threshold is None:
        out.append((("threshold",), f"'{base}' needs a threshold (the most it may be)"))
    if base in OVERLAP and a.threshold is not None and not 0 <= a.threshold <= 1:
        out.append((("threshold",), f"'{base}' is 0..1: the threshold must be too"))
    if base == "levenshtein" and a.threshold is not None and a.threshold < 0:
        out.append((("threshold",), "a distance is never negative"))
    if base in {"perplexity", "latency_ms"} and a.threshold is not None and a.threshold <= 0:
        out.append((("threshold",), "must be over 0"))
    if base == "llm_rubric" and a.threshold is not None and not 0 <= a.threshold <= 1:
        out.append((("threshold",), "a judge's score is 0..1: the threshold must be too"))
    return out


# ## Run on each result


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


_SIMPLE = regex.compile(r"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")


@lru_cache(maxsize=1024)
def _keys(path: str) -> tuple[str, ...] | None:
    """The keys of a plain `$.a.b` path (looked up directly: 10x faster than a JSONPath query), else None."""
    return tuple(path[2:].split(".")) if _SIMPLE.match(path) else None


def _find(path: str, doc: Any) -> Any:
    if doc is _MISSING or doc is None:
        return _MISSING
    keys = _keys(path)
    if keys is not None:
        for key in keys:
            if not isinstance(doc, dict) or key not in doc:
                return _MISSING
            doc = doc[key]
        return doc
    found = _path(path).findall(doc)
    return found[0] if found else _MISSING


#: id(schema) -> (the schema, its validator): a suite's schemas live as long as the suite
_VALIDATORS: dict[int, tuple[Any, Any]] = {}


def _validator(schema: Any) -> Any:
    hit = _VALIDATORS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    if len(_VALIDATORS) > 256:
        _VALIDATORS.clear()
    validator = schema_validator(schema, Limits())
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def reference(a: Assertion, expected: Any) -> Any:
    """What a text assertion compares with: its value, or the case's `expected` (at `path` when it is JSON)."""
    if a.value is not None:
        return a.value
    if a.path is not None and isinstance(expected, dict | list):
        found = _find(a.path, expected)
        return None if found is _MISSING else found
    return expected


def overlap_texts(a: Assertion, out: Output, expected: Any) -> tuple[str, str] | None:
    """The (output, reference) texts a `rouge_l` or `chrf` assertion measures; None where `check` measures
    nothing (no output, its path finds nothing, nothing to compare with)."""
    if out.text is None:
        return None
    subject: Any = out.text
    if a.path is not None:
        subject = _find(a.path, out.json)
        if subject is _MISSING:
            return None
    ref = reference(a, expected)
    return None if ref is None else (_text(subject), _text(ref))


def _overlap(a: Assertion, base: str, score: float, done: Callable[..., Outcome]) -> Outcome:
    bound = a.threshold if a.threshold is not None else DEFAULT_THRESHOLD[base]
    return done(score >= bound, score, f"{base} {score:.3f} (at least {bound:g})", score)


def check(a: Assertion, index: int, out: Output, expected: Any, facts: Facts = Facts(),
          response_format: dict[str, Any] | None = None, measured: float | None = None) -> Outcome:
    """One assertion against one output. `measured`: a `rouge_l` or `chrf` assertion's overlap, measured
    already (with the batch's: `overlap_texts`, shared/evals/scoring.py `score_cases`)."""
    base, negated = a.type.removeprefix("not_"), a.type.startswith("not_")

    def done(passed: bool, score: float, reason: str = "", value: float | None = None) -> Outcome:
        if negated:
            passed, score = not passed, 1.0 - score
        return outcome(a.type, a.name, passed, round(score, 6), a.weight, value, reason)

    if measured is not None and base in OVERLAP:  # its output and reference were found: `overlap_texts`
        return _overlap(a, base, measured, done)
    if out.text is None:
        return Outcome(type=a.type, metric=a.name, passed=False, score=0.0, weight=a.weight,
                       reason=f"no output ({out.error or 'no text'})")
    subject: Any = out.text
    if a.path is not None and base not in _ENGINE:
        subject = _find(a.path, out.json)
        if subject is _MISSING:
            why = "the output is not JSON" if out.json is _MISSING else f"{a.path} finds nothing in the output"
            return done(False, 0.0, why)
    if base in NEEDS_REFERENCE:
        ref = reference(a, expected)
        if ref is None:
            return done(False, 0.0, "nothing to compare with (no value, and the case has no expected)")
    if base == "equals":
        same = subject == ref if not isinstance(subject, str) or not isinstance(ref, str) else (
            subject.strip() == ref.strip())
        return done(same, float(same), "" if same else f"got {_text(subject)[:200]!r}")
    if base in {"contains", "icontains", "contains_any", "icontains_any"}:
        hay = _text(subject)
        needles = a.value if isinstance(a.value, list) else [a.value]
        if base.startswith("i"):
            hay, needles = hay.casefold(), [n.casefold() for n in needles]
        hit = next((n for n in needles if n in hay), None)
        return done(hit is not None, float(hit is not None), f"found {hit!r}" if hit is not None else "not found")
    if base == "regex":
        try:
            hit = _regex(a.value).search(_text(subject), timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            return Outcome(type=a.type, metric=a.name, passed=False, score=0.0, weight=a.weight,
                           reason=f"the regular expression ran over {REGEX_TIMEOUT_S} s")
        return done(hit is not None, float(hit is not None), f"matched {hit.group(0)[:100]!r}" if hit else "no match")
    if base == "levenshtein":
        a_text, b_text = _text(subject), _text(ref)
        distance = metrics.levenshtein(a_text, b_text)
        bound = a.threshold if a.threshold is not None else DEFAULT_THRESHOLD["levenshtein"]
        score = 1.0 - distance / max(len(a_text), len(b_text), 1)
        return done(distance <= bound, score, f"distance {distance} (at most {bound:g})", float(distance))
    if base == "is_json":
        ok = out.json is not _MISSING
        return done(ok, float(ok), "" if ok else "the output is not JSON")
    if base == "json_schema":
        if out.json is _MISSING:
            return done(False, 0.0, "the output is not JSON")
        schema = a.value if a.value is not None else response_format["json_schema"]["schema"]  # type: ignore[index]
        validator, doc = _validator(schema), subject if a.path else out.json
        if quickschema.valid(schema, doc) or validator.is_valid(doc):
            return done(True, 1.0)
        return done(False, 0.0, next(iter(validator.iter_errors(doc))).message[:200])
    if base == "json_path":
        ok = a.value is None or subject == a.value
        return done(ok, float(ok), "" if ok else f"{a.path} is {_text(subject)[:200]}")
    if base in OVERLAP:
        return _overlap(a, base, (metrics.rouge_l if base == "rouge_l" else metrics.chrf)(_text(subject), _text(ref)),
                        done)
    if base == "finish_reason":
        ok = out.finish_reason == a.value
        return done(ok, float(ok), "" if ok else f"finished with {out.finish_reason!r}")
    if base == "latency_ms":
        ms = out.latency_ms
        ok = ms is not None and ms <= (a.threshold or 0)
        return done(ok, float(ok), f"{ms:.0f} ms (at most {a.threshold:g})" if ms is not None else "no latency",
                    ms)
    if base == "llm_rubric":
        verdict = facts.verdicts.get(index)
        if verdict is None:
            return done(False, 0.0, "not judged")
        ok = verdict.passed and (a.threshold is None or verdict.score >= a.threshold)
        return done(ok, verdict.score, verdict.reason[:500], verdict.score)
    if base == "perplexity":
        ppl = facts.perplexity.get(index)
        if ppl is None:
            return done(False, 0.0, "no perplexity")
        ok = ppl <= (a.threshold or 0)
        return done(ok, float(ok), f"perplexity {ppl:.2f} (at most {a.threshold:g})", ppl)
    raise AssertionError(f"unhandled assertion type {a.type}")  # the suite's validator knows every type
