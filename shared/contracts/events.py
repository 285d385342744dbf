"""Events: the one union every producer publishes and every consumer reads (docs/architecture.md).

    chunk      results just stored, with the job's progress       (the runner)
    progress   the job's counters, read from the store             (the API, when no runner events reach it)
    error      a job-level problem found before anything ran       (a platform handler: invalid input)
    final      the outcome, with a summary that is never missing   (the runner, or the store once a job ended)
    gap        events this reader missed were dropped              (a capped event source: re-read results)
    train      a training job's step: loss, eval loss, learning rate, tokens/s, ETA   (the trainer, issue 16)

A stream of a job's events always ends with exactly one `final`. The outcome is what a reader acts
on; a job's status (JobStatus) is what the store shows, never a control signal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from shared.contracts.models import JobStatus, Progress, Result, Summary, percentage


class Outcome(StrEnum):
    """How a run of a job ended."""

    #: every item has a result (some may be error results)
    completed = "completed"
    #: the job could not finish (engine death, store outage, invalid job input); `summary.reason` says why
    failed = "failed"
    #: stopped on request; stored results stay
    cancelled = "cancelled"
    #: stopped through no fault of the job (a worker shutting down, a lost lease); a re-run resumes it
    stopped = "stopped"

    @property
    def status(self) -> JobStatus:
        """The status the store records for this outcome: a stopped job is waiting to run again."""
        return JobStatus.queued if self is Outcome.stopped else JobStatus(self.value)

    @classmethod
    def of(cls, status: JobStatus) -> Outcome:
        """The outcome of a job the store says has ended."""
        if not status.terminal:
            raise ValueError(f"a {status} job has no outcome yet")
        return cls(status.value)


class ChunkEvent(BaseModel):
    type: Literal["chunk"] = "chunk"
    job_id: str
    #: 1, 2, 3... within one run of the job
    seq: int
    results: list[Result]
    #: this run's progress: the whole job's, or, in a job of several shards, this shard's (`shard`)
    progress: Progress
    #: which shard ran (0-based) and how many the job has; None: a job of one shard
    shard: int | None = None
    shards: int | None = None
    #: when its results were stored (Unix time, seconds): the API times the trip from here to SSE
    #: (`llm_jobs_chunk_to_sse_seconds`); None from a producer that does not say
    stored_at: float | None = None


class ProgressEvent(BaseModel):
    """The job's counters as the store has them (where the runner's own events do not reach)."""

    type: Literal["progress"] = "progress"
    job_id: str
    status: JobStatus
    total: int
    completed: int
    failed: int
    percentage: float

    @classmethod
    def of(cls, job_id: str, status: JobStatus, *, total: int, completed: int, failed: int) -> ProgressEvent:
        return cls(job_id=job_id, status=status, total=total, completed=completed, failed=failed,
                   percentage=percentage(completed + failed, total))


class ErrorEvent(BaseModel):
    """A job-level problem found before anything ran; a `final` event with outcome `failed` follows."""

    type: Literal["error"] = "error"
    job_id: str | None
    #: e.g. "invalid input: field 'sampling.temperature': ..."
    error: str


class FinalEvent(BaseModel):
    type: Literal["final"] = "final"
    job_id: str
    outcome: Outcome
    summary: Summary

    @property
    def status(self) -> JobStatus:
        return self.outcome.status

    @classmethod
    def failed(cls, job_id: str, reason: str, *, total: int = 0) -> FinalEvent:
        """The final event of a job that ended before running anything."""
        return cls(job_id=job_id, outcome=Outcome.failed, summary=Summary.empty(total, reason))


#: what a `gap` event says when its source gives no reason of its own
GAP_REASON = ("events were dropped before this reader got them (the stream keeps only its last EVENTS_MAXLEN); "
              "every result is stored: re-read results from the store (GET /v1/jobs/{id}/results)")


class GapEvent(BaseModel):
    """Events after `missed_after` were dropped before this reader got them (a capped stream trimmed
    them). Nothing is lost: every result is stored before its event exists, so a reader that keeps
    results re-reads them from the store. The events that follow come after the gap."""

    type: Literal["gap"] = "gap"
    job_id: str
    #: the last event id the reader had; None: it read from the start
    missed_after: str | None = None
    reason: str = GAP_REASON


class TrainEvent(BaseModel):
    """A training job's progress (shared/contracts/training.py): what its trainer logged at a step.

    `phase` says what happened: `train` (a logged step: loss, learning rate, tokens/s, ETA), `eval` (the
    held-out split's loss), `checkpoint` (saved; a redelivered job resumes here), `perplexity` (measured
    on the held-out split, before or after: `message` says which), `export` (the adapter, the merged model
    and the model card written), or `resume` (training continues from a checkpoint's step)."""

    type: Literal["train"] = "train"
    job_id: str
    phase: Literal["train", "eval", "checkpoint", "perplexity", "export", "resume"]
    step: int = Field(ge=0)
    max_steps: int = Field(ge=0)
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    #: training tokens per second, over this run so far
    tokens_per_s: float | None = None
    #: seconds left, from this run's pace
    eta_s: float | None = None
    perplexity: float | None = None
    message: str | None = None

    @property
    def percentage(self) -> float:
        return percentage(self.step, self.max_steps)


Event = Annotated[ChunkEvent | ProgressEvent | ErrorEvent | FinalEvent | GapEvent | TrainEvent,
                  Field(discriminator="type")]

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: dict[str, Any] | str | bytes) -> Event:
    """An event from its JSON form (a dict, or text); raises pydantic's ValidationError."""
    if isinstance(data, str | bytes):
        return _EVENT.validate_json(data)
    return _EVENT.validate_python(data)
