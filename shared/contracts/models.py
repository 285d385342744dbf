"""The job contract: what goes in (Job, Item) and what comes out (Result, events).

Everything here is plain pydantic: no engine, no I/O (docs/architecture.md, "Contracts").
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from shared.contracts.errors import ErrorCode
from shared.contracts.ids import ID_PATTERN, OWNER_PATTERN
from shared.contracts.training import TrainConfig


def percentage(done: int, total: int) -> float:
    """Share of a job's items that have a result, 0..100 with two decimals.

    A job with no items has nothing left to do: 100.
    """
    return round(100.0 * done / total, 2) if total else 100.0


def rank_index(n: int, p: int) -> int:
    """The 0-based position of the `p`th percentile (0 < p <= 100, an integer) among `n` >= 1 values in
    ascending order, by the nearest-rank method: the ceil(p * n / 100)-th value (1-based), the smallest one
    with at least p % of the values at or below it. It is always one of the values, never an interpolation:
    p50 of 1, 2, 3, 4 is 2; p95 of 1..20 is 19; p95 of 1..10 is 10; p100 is the largest. Integer arithmetic,
    so no rounding moves it at the edges (0.95 * 20 is 19, not 19.000000000000004). Postgres's
    `percentile_disc` is the same method. Every summary's latency percentiles use it: the runner's
    (handler/progress.py) and the stores' (`Store.latency_figures`)."""
    if n < 1 or not 0 < p <= 100:
        raise ValueError(f"no {p}th percentile of {n} values")
    return -(-p * n // 100) - 1


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex[:20]}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ## Input


class Sampling(_Strict):
    """Sampling options; unset fields fall back to the job's, then to the defaults."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    #: a 64-bit seed: a larger one can kill the engine inside vLLM
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] | None = Field(default=None, max_length=16)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def over(self, base: Sampling) -> Sampling:
        """These options, with unset fields taken from `base`."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class JsonSchemaFormat(_Strict):
    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(_Strict):
    """OpenAI's `response_format`."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_matches_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object with a 'schema'")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"'json_schema' is only allowed with type 'json_schema', not '{self.type}'")
        return self


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


OPENAI_URLS = ("/v1/chat/completions", "/v1/completions")


class Item(_Strict):
    """One unit of work: exactly one of `prompt`, `messages`, `fields` or `body`.

    A line of an OpenAI Batch file (`custom_id`, `method`, `url`, `body`) is also an Item.
    """

    custom_id: str = Field(min_length=1, max_length=256)
    prompt: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    fields: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    method: Literal["POST"] | None = None
    url: Literal["/v1/chat/completions", "/v1/completions"] | None = None
    sampling: Sampling | None = None
    #: the LoRA adapter that answers this item (README, "LoRA adapters"); wins over the job's
    adapter: str | None = Field(default=None, pattern=ID_PATTERN)

    @model_validator(mode="after")
    def _exactly_one_input(self) -> Item:
        given = [k for k in ("prompt", "messages", "fields", "body") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"needs exactly one of prompt, messages, fields or body (found: {found})")
        if self.body is None and (self.url or self.method):
            raise ValueError("'method' and 'url' belong to OpenAI Batch lines, which need a 'body'")
        return self


class JobStatus(StrEnum):
    #: accepted, not started
    queued = "queued"
    #: a runner is working on it
    running = "running"
    #: every item has a result (some may be errors)
    completed = "completed"
    #: the job could not finish: engine death, store outage or invalid job input
    failed = "failed"
    #: stopped on request; stored results stay
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """The job has ended: nothing runs it any more (a re-submit with its id may run it again)."""
        return self in (JobStatus.completed, JobStatus.failed, JobStatus.cancelled)


class Rejection(_Strict):
    """An item refused at validation time; it becomes an error result, never lost."""

    custom_id: str
    index: int
    line: int | None = None
    field: str = ""
    code: ErrorCode = ErrorCode.invalid_item
    message: str

    def where(self) -> str:
        place = f"line {self.line}" if self.line is not None else f"item {self.index}"
        return f"{place}, field '{self.field}'" if self.field else place

    def describe(self) -> str:
        return f"{self.where()}: {self.message}"


class JobOptions(_Strict):
    """Everything about a job except its items."""

    id: str = Field(default_factory=new_job_id, pattern=ID_PATTERN)
    model: str | None = None
    #: the LoRA adapter over the model that answers every item that names none (README, "LoRA adapters")
    adapter: str | None = Field(default=None, pattern=ID_PATTERN)
    template: str | None = Field(default=None, max_length=100_000)
    system: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    response_format: ResponseFormat | None = None
    chunk_size: int | None = Field(default=None, ge=1, le=10_000)
    chunk_interval_s: float | None = Field(default=None, gt=0, le=3600)
    #: the result format a reader gets by default: OpenAI in, OpenAI out
    result_format: Literal["ours", "openai"] = "ours"
    #: which queue a job waits in: "high" drains first (the queue dispatcher; others ignore it)
    priority: Literal["high", "default"] = "default"
    #: a named task (tasks/*.yaml, `GET /v1/tasks`): its options under the job's own (shared/contracts/tasks.py)
    task: str | None = Field(default=None, pattern=ID_PATTERN)
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: who owns it (shared/contracts/owners.py): the API sets it from the caller's credentials; only an
    #: admin key may name one
    owner: str | None = Field(default=None, pattern=OWNER_PATTERN)
    #: a training job (shared/contracts/training.py): its items are the examples, and it trains a LoRA adapter
    training: TrainConfig | None = None


class Job(JobOptions):
    """The one wire format: what the queue, RunPod and Modal carry, with the items refused at the edge."""

    items: list[Item] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)
    #: (RequestBuilder, {custom_id: Request}) from validation in this process; never serialized
    _prepared: Any = PrivateAttr(default=None)

    @property
    def prepared(self) -> Any:
        return self._prepared

    def keep_prepared(self, builder: Any, requests: dict[str, Any]) -> None:
        self._prepared = (builder, requests)

    def wire(self) -> dict[str, Any]:
        """The JSON document every transport carries (`Job.model_validate` reads it back)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def total(self) -> int:
        return len(self.items) + len(self.rejected)

    # The names a ShardRef also has (shared/contracts/shards.py): a whole job is its own one shard.
    #: never split: it runs whole
    sharded: ClassVar[bool] = False

    @property
    def job_id(self) -> str:
        return self.id

    @property
    def entry_id(self) -> str:
        """The queue's key for it."""
        return self.id


# ## Output


class ResultStatus(StrEnum):
    ok = "ok"
    error = "error"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ItemError(BaseModel):
    code: str
    message: str


class Result(BaseModel):
    custom_id: str
    status: ResultStatus
    text: str | None = None
    parsed: Any = None
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_ms: float | None = None
    error: ItemError | None = None

    @classmethod
    def failure(cls, custom_id: str, code: str, message: str, **kw: Any) -> Result:
        return cls(custom_id=custom_id, status=ResultStatus.error, error=ItemError(code=code, message=message), **kw)


class Progress(BaseModel):
    #: items that succeeded, including ones done by an earlier run
    completed: int
    #: items that ended in an error result
    failed: int
    total: int
    percentage: float
    elapsed_s: float
    eta_s: float | None
    items_per_s: float
    tokens_per_s: float
    #: items found already stored when this run started (resume)
    skipped: int = 0


class Summary(BaseModel):
    total: int
    completed: int
    failed: int
    skipped: int = 0
    elapsed_s: float
    items_per_s: float
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float
    error_codes: dict[str, int] = Field(default_factory=dict)
    #: why the job failed or was cancelled
    reason: str | None = None
    #: a training job's report (shared/contracts/training.py TrainReport, as JSON)
    training: dict[str, Any] | None = None
    #: item latency in ms, from an item's start to its result, over the items this run ran (failed ones with a
    #: latency too; not those skipped as stored before, nor items refused at the edge): nearest-rank
    #: percentiles (`rank_index`) and the largest. A job of several shards: over all its stored results. None:
    #: no item ran (or a summary written before these figures existed)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    #: seconds from the run's start to its first chunk of results (stored, then yielded); a job of several
    #: shards: from the job's start to its first stored result
    first_chunk_s: float | None = None
    #: the engine's peak KV-cache use during the run, 0..1 (a shared engine's: other jobs on it count too).
    #: None: the engine does not say, or a job of several shards (each ran on its own engine)
    peak_kv_cache: float | None = None

    @classmethod
    def empty(cls, total: int, reason: str | None = None) -> Summary:
        """For a job that ended before running anything."""
        return cls(total=total, completed=0, failed=0, elapsed_s=0, items_per_s=0, prompt_tokens=0,
                   completion_tokens=0, tokens_per_s=0, reason=reason)


class LatencyFigures(BaseModel):
    """A job's item latency over its stored results (`Store.latency_figures`): what a job of several
    shards rolls up into its summary (handler/rollup.py)."""

    #: nearest-rank percentiles (`rank_index`) and the largest, in ms, over the results that have a latency;
    #: None when none has
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    #: seconds from the job's start (`started_at`) to its first stored result, never below 0; None: unknown
    first_result_s: float | None = None


class JobRecord(BaseModel):
    """A job as the store keeps it: status and counters, no items."""

    id: str
    status: JobStatus
    model: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    #: tokens of the stored results, counted by the store like completed and failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    error: str | None = None
    summary: Summary | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: who owns it (shared/contracts/owners.py); None: an admin's, or sent straight to a platform
    owner: str | None = None
    #: the named task that made it, if one did
    task: str | None = None

    @property
    def percentage(self) -> float:
        return percentage(self.completed + self.failed, self.total)
