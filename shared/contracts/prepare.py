"""Turn a job's items into engine requests: render templates, resolve sampling, check limits.

Validation at the edge builds every item's request, so every error is reported before any
engine work. The requests it built ride along with the Job in memory (`prepared`), so a runner
in the same process builds each request once; a job read from a queue or a platform's input is
built once by the process that runs it.

Templates render in a bounded sandbox (`shared/contracts/sandbox.py`): a template that loops or
grows strings past its budget fails its item, like any other template error. A response_format
schema is checked against a size and a depth cap before it is compiled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SecurityError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError
from referencing import Registry

from shared.contracts.errors import ErrorCode, InputError, Issue, ItemFailure
from shared.contracts.models import Item, Job, JobOptions, Message, ResponseFormat, Sampling
from shared.contracts.sandbox import BoundedEnvironment, OutputTooLong, render
from shared.contracts.settings import DEFAULTS, Settings


class TemplateRefused(ItemFailure):
    """The template broke the sandbox or its budget. That is the job's fault, not the item's: validation
    refuses the whole job (422, field `template`), with `strict=false` too. A worker that builds a job
    it was handed still fails only the item."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.invalid_item, message, field="template")


@dataclass(frozen=True, slots=True)
class Limits:
    max_items: int = DEFAULTS.max_items_per_job
    max_prompt_chars: int = DEFAULTS.max_prompt_chars
    default_max_tokens: int = DEFAULTS.default_max_tokens
    max_tokens_cap: int = DEFAULTS.max_tokens_cap
    template_max_steps: int = DEFAULTS.template_max_steps
    schema_max_bytes: int = DEFAULTS.schema_max_bytes
    schema_max_depth: int = DEFAULTS.schema_max_depth

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(s.max_items_per_job, s.max_prompt_chars, s.default_max_tokens, s.max_tokens_cap,
                   s.template_max_steps, s.schema_max_bytes, s.schema_max_depth)


#: llm-jobs' own sampling defaults: what the job, the item and the model's generation config leave
#: unset. The engine applies them, after the model's (see handler/engine/generation.py).
SAMPLING_DEFAULTS = Sampling(temperature=1.0, top_p=1.0, presence_penalty=0.0, frequency_penalty=0.0)


@dataclass(frozen=True, slots=True)
class Request:
    """What the engine runs for one item. Exactly one of `messages` (chat) or `prompt` (raw).

    `sampling` is the item's options over the job's, `max_tokens` always set; the rest may be unset.
    """

    custom_id: str
    messages: tuple[dict[str, str], ...] | None
    prompt: str | None
    sampling: Sampling
    #: the JSON schema the output must match, or {} for any JSON object
    schema: dict[str, Any] | None = None
    validator: Draft202012Validator | None = None
    #: the messages are the item's own text (`prompt`, or `fields` through the template) as one user
    #: turn, after the job's system text: a model without a chat template takes that text as a prompt
    plain: bool = False
    #: the LoRA adapter that answers it (the item's, else the job's); None: the base model
    adapter: str | None = None


# OpenAI body keys we honour, and the harmless ones we accept and ignore.
_SAMPLING_KEYS = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty")
_IGNORED_KEYS = {"user", "metadata", "store", "service_tier", "stream_options", "parallel_tool_calls"}
_CHAT_KEYS = {"model", "messages", "max_tokens", "max_completion_tokens", "response_format", "n", "stream",
              "logprobs", *_SAMPLING_KEYS, *_IGNORED_KEYS}
_COMPLETION_KEYS = {"model", "prompt", "max_tokens", "n", "stream", "echo", "logprobs", *_SAMPLING_KEYS,
                    *_IGNORED_KEYS}

_JINJA = BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


#: keywords whose value is a URI reference the validator (or xgrammar) would resolve
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


class RemoteRefError(SchemaError):
    """A schema refers outside itself (`http://...`, `file:///...`, `other.json#...`): never fetched."""

    def __init__(self, where: str, ref: Any):
        super().__init__(f"only references inside the schema ('#...') are allowed, not {str(ref)[:200]!r}")
        self.where = where  # after SchemaError's own __init__, which sets `path` to a deque


class SchemaTooBig(SchemaError):
    """A schema over the size or depth cap: refused before it is compiled (checking a 4.6 MB schema took 50 s)."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


def check_schema_size(schema: Any, limits: Limits) -> None:
    """Refuse a schema whose compact JSON would pass `max_bytes`, or that nests deeper than `max_depth`.
    Iterative, and stops at the first cap passed: the work is bounded by the caps, not by the schema."""
    max_bytes, max_depth = limits.schema_max_bytes, limits.schema_max_depth
    size, stack = 0, [(schema, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise SchemaTooBig(f"the schema nests deeper than {max_depth} levels", where)
            size += 2 + max(len(value) - 1, 0)
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in pairs:
                if isinstance(key, str):
                    size += len(key) + 3
                stack.append((child, depth + 1, f"{where}.{key}" if where else str(key)))
        elif isinstance(value, str):
            size += len(value) + 2
        else:  # a number, true, false or null
            size += len(str(value)) if isinstance(value, int | float) else 5
        if size > max_bytes:
            raise SchemaTooBig(f"the schema is over {max_bytes} bytes of JSON")


def _refuse_remote_refs(node: Any, path: str = "") -> None:
    """Every $ref must point inside the schema: a remote one would make the worker fetch a URL or read a
    file when the job runs (SSRF). Iterative, so a deep schema cannot exhaust the stack."""
    stack = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                at = f"{where}.{key}" if where else str(key)
                if key in _REF_KEYWORDS and not (isinstance(child, str) and child.startswith("#")):
                    raise RemoteRefError(at, child)
                stack.append((child, at))
        elif isinstance(value, list):
            stack.extend((child, f"{where}.{i}") for i, child in enumerate(value))


@lru_cache(maxsize=64)
def _validator_for(schema_json: str) -> Draft202012Validator:
    schema = json.loads(schema_json)
    _refuse_remote_refs(schema)
    Draft202012Validator.check_schema(schema)
    # an empty registry that retrieves nothing: jsonschema's default would fetch remote refs with urlopen
    return Draft202012Validator(schema, registry=Registry())


def schema_validator(schema: Any, limits: Limits) -> Draft202012Validator:
    """A validator for a user's JSON schema, under the caps, with no remote $ref; raises SchemaError."""
    check_schema_size(schema, limits)
    return _validator_for(json.dumps(schema, sort_keys=True))


def _schema_of(fmt: ResponseFormat | None, limits: Limits
               ) -> tuple[dict[str, Any] | None, Draft202012Validator | None]:
    """(schema, validator) for a response_format; raises SchemaError for a bad schema."""
    if fmt is None or fmt.type == "text":
        return None, None
    schema = fmt.json_schema.schema_ if fmt.json_schema else {"type": "object"}
    return (schema if fmt.type == "json_schema" else {}), schema_validator(schema, limits)


def schema_problem(e: SchemaError) -> str:
    return e.message if isinstance(e, SchemaTooBig) else f"not a valid JSON schema: {e.message}"


def schema_field(base: str, e: SchemaError) -> str:
    where = getattr(e, "where", "") if isinstance(e, RemoteRefError | SchemaTooBig) else ""
    return f"{base}.{where}" if where else base


class RequestBuilder:
    """Builds requests for one job; job-level problems raise InputError from the constructor."""

    def __init__(self, job: JobOptions, limits: Limits, served_models: frozenset[str] = frozenset(),
                 *, any_model: bool = False):
        self.job = job
        self.limits = limits
        self.served_models = served_models
        #: map every line to the served model, whatever `body.model` says (`--model`)
        self.any_model = any_model
        issues: list[Issue] = []
        self.template: jinja2.Template | None = None
        if job.template is not None:
            try:
                self.template = _JINJA.from_string(job.template)
            except jinja2.TemplateSyntaxError as e:
                issues.append(Issue(f"template syntax error on template line {e.lineno}: {e.message}",
                                    field="template"))
        try:
            self.schema, self.validator = _schema_of(job.response_format, limits)
        except SchemaError as e:
            issues.append(Issue(schema_problem(e),
                                field=schema_field("response_format.json_schema.schema", e)))
        if (job.sampling.max_tokens or 0) > limits.max_tokens_cap:
            issues.append(Issue(f"{job.sampling.max_tokens} is over the cap of {limits.max_tokens_cap}",
                                field="sampling.max_tokens"))
        if job.model and served_models and not any_model and job.model not in served_models:
            issues.append(Issue(f"model '{job.model}' is not served here (serving: {sorted(served_models)})",
                                field="model", code=ErrorCode.model_not_found))
        if issues:
            raise InputError(issues)
        # temperature, top_p and the penalties stay unset here: the engine knows the model's defaults
        self.base = Sampling(max_tokens=limits.default_max_tokens).model_copy(
            update=job.sampling.model_dump(exclude_none=True))

    def same_checks(self, limits: Limits, served_models: frozenset[str], any_model: bool) -> bool:
        """Would a builder made with these arguments build the same requests?"""
        return (self.limits, self.served_models, self.any_model) == (limits, served_models, any_model)

    # ## One item

    def build(self, item: Item) -> Request:
        request = self._build(item)
        adapter = item.adapter or self.job.adapter
        return replace(request, adapter=adapter) if adapter else request

    def _build(self, item: Item) -> Request:
        if item.body is not None:
            return self._from_body(item)
        sampling = self._sampling(item.sampling, "sampling")
        if item.prompt is not None:
            messages = self._with_system([{"role": "user", "content": item.prompt}])
        elif item.messages is not None:
            messages = self._with_system([{"role": m.role, "content": m.text()} for m in item.messages])
        else:
            messages = self._with_system([{"role": "user", "content": self._render(item)}])
        self._check_length(messages, "prompt" if item.prompt is not None else "messages", sampling)
        return Request(item.custom_id, tuple(messages), None, sampling, self.schema, self.validator,
                       plain=item.messages is None)

    def _render(self, item: Item) -> str:
        if self.template is None:
            raise ItemFailure(ErrorCode.invalid_item, "the item has 'fields' but the job has no 'template'",
                              field="fields")
        try:
            return render(self.template, max_chars=self.limits.max_prompt_chars,
                          max_steps=self.limits.template_max_steps,
                          **(item.fields or {}), item={"custom_id": item.custom_id, "fields": item.fields})
        except jinja2.UndefinedError as e:
            raise ItemFailure(ErrorCode.invalid_item, f"template needs a value the item lacks: {e.message}",
                              field="fields") from e
        except OutputTooLong as e:  # the item's data can do this alone
            raise ItemFailure(ErrorCode.invalid_item, str(e), field="fields") from e
        except SecurityError as e:  # over its budget, or reaching for Python's internals
            raise TemplateRefused(f"the template was stopped: {e}") from e
        except jinja2.TemplateError as e:
            raise ItemFailure(ErrorCode.invalid_item, f"template failed: {e}", field="fields") from e
        except Exception as e:  # the template is user code: whatever it raises (1 // 0, a huge int) fails the item
            raise ItemFailure(ErrorCode.invalid_item, f"template failed: {type(e).__name__}: {e}",
                              field="fields") from e

    def _with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.job.system and messages[0]["role"] != "system":
            return [{"role": "system", "content": self.job.system}, *messages]
        return messages

    def _check_length(self, messages: list[dict[str, str]] | str, field: str, sampling: Sampling) -> None:
        """The prompt and the stop strings together (the engine holds both) within max_prompt_chars."""
        n = len(messages) if isinstance(messages, str) else sum(len(m["content"]) for m in messages)
        stops = sum(len(s) for s in sampling.stop or ())
        if n + stops > self.limits.max_prompt_chars:
            with_stops = f" ({stops} of them in stop strings)" if stops else ""
            raise ItemFailure(ErrorCode.invalid_item, f"{n + stops} characters{with_stops} is over the limit of "
                              f"{self.limits.max_prompt_chars}", field=field)

    def _sampling(self, override: Sampling | None, field: str) -> Sampling:
        s = override.over(self.base) if override else self.base
        if s.max_tokens > self.limits.max_tokens_cap:
            raise ItemFailure(ErrorCode.invalid_item,
                              f"{s.max_tokens} is over the cap of {self.limits.max_tokens_cap}",
                              field=f"{field}.max_tokens")
        return s

    # ## OpenAI Batch bodies

    def _from_body(self, item: Item) -> Request:
        body = item.body or {}
        chat = (item.url or "/v1/chat/completions") == "/v1/chat/completions"
        allowed = _CHAT_KEYS if chat else _COMPLETION_KEYS
        for key in body:
            if key not in allowed:
                raise ItemFailure(ErrorCode.invalid_item, f"not supported for {item.url or 'chat'} lines",
                                  field=f"body.{key}")
        model = body.get("model")
        # no model named: the served one, as vLLM's own OpenAI server does
        if model is not None and not self.any_model and self.served_models and model not in self.served_models:
            raise ItemFailure(ErrorCode.model_not_found,
                              f"The model '{model}' does not exist here (serving: {sorted(self.served_models)}); "
                              "pass --model to map every line to the served model", field="body.model")
        if body.get("n", 1) != 1:
            raise ItemFailure(ErrorCode.invalid_item, "only n=1 is supported", field="body.n")
        for flag in ("stream", "echo", "logprobs"):
            if body.get(flag):
                raise ItemFailure(ErrorCode.invalid_item, "is not supported in batch jobs", field=f"body.{flag}")
        params = {k: body[k] for k in _SAMPLING_KEYS if body.get(k) is not None}
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        try:
            override = Sampling.model_validate(params)
        except ValidationError as e:
            err = e.errors()[0]
            raise ItemFailure(ErrorCode.invalid_item, err["msg"],
                              field="body." + ".".join(str(p) for p in err["loc"])) from e
        sampling = self._sampling(override, "body")
        if chat:
            return self._chat_body(item, body, sampling)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ItemFailure(ErrorCode.invalid_item, "must be a string (or a list of one string)",
                              field="body.prompt")
        self._check_length(prompt, "body.prompt", sampling)
        return Request(item.custom_id, None, prompt, sampling)

    def _chat_body(self, item: Item, body: dict[str, Any], sampling: Sampling) -> Request:
        try:
            messages = [Message.model_validate(m) for m in body.get("messages") or []]
        except ValidationError as e:
            err = e.errors()[0]
            raise ItemFailure(ErrorCode.invalid_item, err["msg"],
                              field="body.messages." + ".".join(str(p) for p in err["loc"])) from e
        if not messages:
            raise ItemFailure(ErrorCode.invalid_item, "must be a non-empty list", field="body.messages")
        schema, validator = self.schema, self.validator
        if body.get("response_format") is not None:
            try:
                schema, validator = _schema_of(ResponseFormat.model_validate(body["response_format"]), self.limits)
            except ValidationError as e:
                raise ItemFailure(ErrorCode.invalid_item, e.errors()[0]["msg"],
                                  field="body.response_format") from e
            except SchemaError as e:
                raise ItemFailure(ErrorCode.invalid_item, schema_problem(e),
                                  field=schema_field("body.response_format.json_schema.schema", e)) from e
        plain = [{"role": m.role, "content": m.text()} for m in messages]
        self._check_length(plain, "body.messages", sampling)
        return Request(item.custom_id, tuple(plain), None, sampling, schema, validator)


def builder_for(job: Job, limits: Limits, served_models: frozenset[str], *, any_model: bool = False
             ) -> tuple[RequestBuilder, dict[str, Request]]:
    """The job's builder and the requests validation already built, when built with the same checks;
    else a new builder (InputError for job-level problems) and no requests."""
    if job.prepared is not None:
        builder, requests = job.prepared
        if builder.same_checks(limits, served_models, any_model):
            return builder, dict(requests)
    return RequestBuilder(job, limits, served_models, any_model=any_model), {}


def check_output(request: Request, text: str) -> Any:
    """The parsed output for a JSON request; raises ItemFailure(invalid_output)."""
    if request.validator is None:
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ItemFailure(ErrorCode.invalid_output, f"output is not valid JSON: {e}", text=text) from e
    errors = sorted(request.validator.iter_errors(parsed), key=lambda err: list(err.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise ItemFailure(ErrorCode.invalid_output, f"output does not match the schema at {where}: {err.message}",
                          text=text)
    return parsed
