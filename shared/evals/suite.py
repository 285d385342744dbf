"""The suite format: a YAML or JSON file of test cases with expectations and assertions.

    id: grading-ca                  # the suite's name (a job id's characters)
    description: ...
    model / template / system / sampling / response_format: as a job's (shared/contracts/models.py)
    assert: [...]                   # assertions every case gets, before its own
    grading: {output: $.nota, expected: $.nota, labels: [0, 1, 2, 3, 4, 5]}
    regression: {max_drop: 0.05}
    cases:
      - id: essay-01
        fields: {...}               # or prompt, messages, or body (an OpenAI body): as an item's
        expected: {nota: 3, feedback: "..."}
        assert:
          - type: rouge_l
            path: $.feedback        # what it looks at in the output (and, with no value, in `expected`)
            threshold: 0.2
            weight: 2

Everything is checked before anything runs, and every problem is an `Issue` that names the case
and the field (and the file's line, for YAML and JSON): `cases.3.assert.1.threshold`. A suite is
hostile input: YAML aliases are refused (no billion laughs), the file has a size cap, regular
expressions are compiled here and run with a time limit (shared/evals/checks.py), schemas keep the
job's caps and refuse remote `$ref`, and the job options are checked as a job's are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from shared.contracts.errors import InputError, Issue
from shared.contracts.inputs import parse_job_document
from shared.contracts.models import ID_PATTERN, Job, Message, Sampling, _Strict
from shared.contracts.prepare import Limits
from shared.evals.checks import ASSERTION_TYPES, check_assertion_config, path_problem

#: a suite file's size cap
MAX_SUITE_BYTES = 20 * 1024 * 1024
#: cases in one suite
MAX_CASES = 100_000


class Assertion(_Strict):
    """One check of a case's output (promptfoo's vocabulary: shared/evals/checks.py)."""

    #: e.g. `contains`, `not_icontains`, `rouge_l` (a hyphen is read as an underscore: `llm-rubric`)
    type: str
    #: what to compare with (a string, a number, a list, a schema, a rubric); none: the case's `expected`
    value: Any = None
    #: the bound the score must reach (`latency_ms`, `perplexity`, `levenshtein`: must not pass)
    threshold: float | None = None
    #: its share of the case's score
    weight: float = Field(default=1.0, ge=0, le=1000)
    #: a JSONPath into the output's JSON: the part this assertion looks at (`json_path`: required)
    path: str | None = Field(default=None, max_length=1000)
    #: the name it is reported under (default: its type)
    metric: str | None = Field(default=None, max_length=100)
    #: `llm_rubric`: the judge's model (default: the suite's)
    model: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _underscores(cls, v: Any) -> Any:
        return v.strip().replace("-", "_").lower() if isinstance(v, str) else v

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        base = v.removeprefix("not_")
        if base not in ASSERTION_TYPES:
            raise ValueError(f"unknown assertion type '{v}' (known: {', '.join(sorted(ASSERTION_TYPES))}, "
                             "each also as not_<type> where it can be negated)")
        return v

    @property
    def name(self) -> str:
        return self.metric or self.type


class Case(_Strict):
    """One test case: an item's input, an optional `expected`, and its assertions."""

    id: str = Field(pattern=r"^[^\s].{0,255}$")
    description: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    fields: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    sampling: Sampling | None = None
    expected: Any = None
    assert_: list[Assertion] = Field(default_factory=list, alias="assert", max_length=100)

    @model_validator(mode="after")
    def _one_input(self) -> Case:
        given = [k for k in ("prompt", "messages", "fields", "body") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"needs exactly one of prompt, messages, fields or body (found: {found})")
        return self

    def item(self) -> dict[str, Any]:
        """The item it runs as (custom_id: the case's id)."""
        doc: dict[str, Any] = {"custom_id": self.id}
        for key in ("prompt", "messages", "fields", "body", "sampling"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else (
                    [m.model_dump(exclude_none=True) for m in value] if key == "messages" else value)
        if "body" in doc:
            doc |= {"method": "POST", "url": "/v1/chat/completions" if "messages" in doc["body"] else "/v1/completions"}
        return doc


class Grading(_Strict):
    """Grading agreement: a numeric label in the output against the one in `expected` (shared/evals/agreement.py)."""

    #: the label in the output's JSON
    output: str = Field(max_length=1000)
    #: the label in the case's `expected` (default: the same path)
    expected: str | None = Field(default=None, max_length=1000)
    #: the labels in order (quadratic weighted kappa weighs by their distance); default: those seen
    labels: list[int] | None = Field(default=None, min_length=2, max_length=1000)


class Regression(_Strict):
    """What counts as a regression against a baseline run (shared/evals/regress.py)."""

    #: a metric (a mean score, a pass rate, agreement, kappa) that drops by more than this regresses
    max_drop: float = Field(default=0.05, ge=0, le=1)


class Suite(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    description: str | None = None
    model: str | None = None
    template: str | None = Field(default=None, max_length=100_000)
    system: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    response_format: dict[str, Any] | None = None
    assert_: list[Assertion] = Field(default_factory=list, alias="assert", max_length=100)
    grading: Grading | None = None
    regression: Regression = Field(default_factory=Regression)
    metadata: dict[str, Any] = Field(default_factory=dict)
    cases: list[Case] = Field(min_length=1, max_length=MAX_CASES)

    def version(self) -> str:
        """A content hash: the same suite, however written (YAML or JSON, key order), has the same one."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def assertions(self, case: Case) -> list[Assertion]:
        """The suite's assertions, then the case's own."""
        return [*self.assert_, *case.assert_]

    def job_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"sampling": self.sampling.model_dump(exclude_none=True)}
        for key in ("model", "template", "system", "response_format"):
            if getattr(self, key) is not None:
                opts[key] = getattr(self, key)
        return opts

    def job(self, job_id: str, *, model: str | None = None, metadata: dict[str, Any] | None = None) -> Job:
        """The job that runs the suite's cases: one item per case, custom_id the case's id."""
        doc = {**self.job_options(), "id": job_id, "items": [c.item() for c in self.cases],
               "metadata": {**self.metadata, **(metadata or {})}}
        if model:
            doc["model"] = model
        return Job.model_validate(doc)


# ## Reading a suite file


class _NoAliases(yaml.SafeLoader):
    """Safe YAML, and no aliases: an alias can make a few bytes expand into gigabytes when walked."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError("while reading the suite", None, "aliases (*name) are not allowed",
                                       event.start_mark)
        return super().compose_node(parent, index)


def _lines(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Each path in a composed YAML document -> its 1-based line."""
    out = {path: node.start_mark.line + 1}
    stack = [(node, path)]
    while stack:
        n, at = stack.pop()
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = (*at, str(k.value))
                out[key] = k.start_mark.line + 1
                stack.append((v, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                key = (*at, str(i))
                out[key] = v.start_mark.line + 1
                stack.append((v, key))
    return out


def _read(text: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The document, and where each part of it is (YAML is a superset of JSON: one reader for both)."""
    try:
        loader = _NoAliases(text)  # it refuses control characters already
    except yaml.YAMLError as e:
        raise InputError([Issue(f"not valid YAML or JSON: {e}")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError([Issue("the suite file is empty")])
        return loader.construct_document(node), _lines(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise InputError([Issue(f"not valid YAML or JSON: {problem}",
                                line=mark.line + 1 if mark is not None else None)]) from None
    except RecursionError:
        raise InputError([Issue("not a suite: nested too deeply")]) from None
    finally:
        loader.dispose()


def _case_name(doc: Any, loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int) and isinstance(doc, dict):
        cases = doc.get("cases")
        if isinstance(cases, list) and loc[1] < len(cases) and isinstance(cases[loc[1]], dict):
            return f"case '{cases[loc[1]].get('id', loc[1])}': "
        return f"case {loc[1]}: "
    return ""


def _located(doc: Any, lines: dict[tuple[str, ...], int], loc: tuple[Any, ...], message: str) -> Issue:
    """An issue at `loc`, naming the case and the field, on the nearest line known."""
    at = tuple(str(p) for p in loc)
    line = None
    for n in range(len(at), -1, -1):
        if at[:n] in lines:
            line = lines[at[:n]]
            break
    return Issue(_case_name(doc, loc) + message, field=".".join(at), line=line)


def parse_suite(text: str, *, limits: Limits = Limits(), served_models: frozenset[str] = frozenset(),
                any_model: bool = False) -> Suite:
    """A suite from YAML or JSON text, checked whole: every problem found is raised as one InputError."""
    if len(text.encode()) > MAX_SUITE_BYTES:
        raise InputError([Issue(f"the suite file is over {MAX_SUITE_BYTES // (1024 * 1024)} MiB")])
    doc, lines = _read(text)
    if not isinstance(doc, dict):
        raise InputError([Issue(f"a suite is a mapping with `id` and `cases`, not {type(doc).__name__}")])
    try:
        suite = Suite.model_validate(doc)
    except ValidationError as e:
        issues = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            issues.append(_located(doc, lines, loc, err["msg"].removeprefix("Value error, ")))
        raise InputError(issues) from None
    issues = []
    seen: dict[str, int] = {}
    for i, case in enumerate(suite.cases):
        if case.id in seen:
            issues.append(_located(doc, lines, ("cases", i, "id"), f"the id repeats case {seen[case.id]}'s"))
        seen.setdefault(case.id, i)
    for where, assertions in [(("assert",), suite.assert_),
                              *((("cases", i, "assert"), c.assert_) for i, c in enumerate(suite.cases))]:
        for j, a in enumerate(assertions):
            for field, problem in check_assertion_config(a, suite.response_format, limits):
                issues.append(_located(doc, lines, (*where, j, *field), problem))
    if suite.grading is not None:
        for field, path in (("output", suite.grading.output), ("expected", suite.grading.expected)):
            if path is not None and (problem := path_problem(path)):
                issues.append(_located(doc, lines, ("grading", field), problem))
    if not issues:  # the job it runs as, checked as a job is: the template, the schema, the model, each item
        try:
            parse_job_document(suite.job(suite.id).wire(), limits=limits, served_models=served_models,
                               any_model=any_model, strict=True)
        except InputError as e:
            for i in e.issues:
                field = tuple(i.field.split(".")) if i.field else ()
                issues.append(_located(doc, lines, ("cases", i.index, *field) if i.index is not None else field,
                                       i.message))
    if issues:
        raise InputError(issues)
    return suite
