"""Shards: what a transport carries instead of a job's items (docs/architecture.md, "Shards").

A job's items are staged in the store (job_items, at idx 0..total-1). The job is split into
shards of at most `SHARD_SIZE` consecutive idx; each shard is one `ShardRef`: the job's options
(bounded: a template, a schema, metadata) plus its idx range. The queue, RunPod's /run and Modal's
spawn carry `ShardRef.wire()`, a document whose size does not grow with the job.

    refs = plan_shards(options, total=100_000, shard_size=1000)   # 100 refs
    ref = ShardRef.model_validate(doc)                             # a worker reads one back
    ref.entry_id                                                   # "job_1#7": the queue's key

A job of at most SHARD_SIZE items is one shard, whose entry id is the job id itself.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.models import Job, JobOptions

#: separates a job id from a shard number in a queue entry id ("job_1#7"); never in an ID_PATTERN id
SHARD_SEP = "#"


class ShardRef(BaseModel):
    """One shard of a staged job: the job's options and the idx range [start, end) it runs."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["shard"] = "shard"
    job: JobOptions
    #: the job's item count (staged items, rejected ones included)
    total: int = Field(ge=0)
    shard: int = Field(default=0, ge=0)
    shards: int = Field(default=1, ge=1)
    start: int = Field(default=0, ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _in_range(self) -> ShardRef:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} of {self.shards}: shard numbers run 0..shards-1")
        if not self.start <= self.end <= max(self.total, self.start):
            raise ValueError(f"idx range [{self.start}, {self.end}) is not inside the job's {self.total} item(s)")
        return self

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def sharded(self) -> bool:
        """More than one shard: the job ends when all of them have (handler/rollup.py)."""
        return self.shards > 1

    @property
    def entry_id(self) -> str:
        """The queue's key for this shard: the job id for a one-shard job, `<job id>#<shard>` otherwise."""
        return self.job.id if self.shards == 1 else f"{self.job.id}{SHARD_SEP}{self.shard}"

    def label(self) -> str:
        return f"shard {self.shard + 1}/{self.shards} (items {self.start}..{self.end - 1})" if self.sharded \
            else "the whole job"

    def options_job(self) -> Job:
        """The job's options as an item-less Job (what the request builder and `store.begin` take)."""
        return Job.model_validate(self.job.model_dump(by_alias=True))

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def job_of(entry_id: str) -> str:
    """The job id of a queue entry id."""
    return entry_id.split(SHARD_SEP, 1)[0]


def is_shard_ref(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("kind") == "shard"


def plan_shards(options: JobOptions, total: int, shard_size: int) -> list[ShardRef]:
    """Consecutive idx ranges of at most `shard_size` items; a job with no items is one empty shard
    (a worker records it completed). A training job is one shard whatever its size: it trains whole."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if options.training is not None:
        shard_size = max(total, 1)
    count = max(1, -(-total // shard_size))
    opts = JobOptions.model_validate(options.model_dump(by_alias=True, include=set(JobOptions.model_fields)))
    return [ShardRef(job=opts, total=total, shard=k, shards=count, start=k * shard_size,
                     end=min(total, (k + 1) * shard_size)) for k in range(count)]
