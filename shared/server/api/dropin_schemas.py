"""The bodies of the grading service's own API (shared/server/api/dropin.py), field for field as its
clients send and read them. Names are the service's (Spanish and Catalan), not ours."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: the most items one /evaluate may carry (our MAX_ITEMS_PER_JOB applies too)
MAX_EVALUATE_ITEMS = 100_000


class Answer(BaseModel):
    """One student's answer to grade."""

    id_alumno: str | int = Field(description="the student's id: it comes back with the grade")
    curso: str = Field(max_length=200)
    consigna: str = Field(max_length=20_000)
    respuesta: str = Field(max_length=50_000)
    model_config = ConfigDict(extra="ignore")


class EvaluateIn(BaseModel):
    items: list[Answer] = Field(min_length=1, max_length=MAX_EVALUATE_ITEMS)
    #: other fields the service's clients send are accepted and ignored
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"items": [
        {"id_alumno": "a-001", "curso": "4t ESO", "consigna": "Explica el cicle de l'aigua.",
         "respuesta": "L'aigua s'evapora, es condensa als núvols i torna a caure com a pluja."}]}]})


class EvaluateAccepted(BaseModel):
    job_id: str
    total_items: int
    estimated_time_seconds: float
    #: queued, running, completed (a known job), failed or cancelled
    status: str
    stream_url: str


class Graded(BaseModel):
    id_alumno: str | int
    #: 0..5; null when the item failed (then `error` says why)
    nota: int | None
    feedback: str | None
    error: str | None = None


class BatchProgress(BaseModel):
    completed: int
    total: int
    percentage: float
    elapsed_seconds: float
    estimated_remaining_seconds: float | None
    avg_time_per_item: float | None


class BatchComplete(BaseModel):
    """SSE `batch_complete`: every BATCH results."""

    batch_number: int
    results: list[Graded]
    progress: BatchProgress


class Complete(BaseModel):
    """SSE `complete`: the last event."""

    total_processed: int
    total_time_seconds: float
    #: completed, failed or cancelled
    status: str


class ServiceHealth(BaseModel):
    status: str
    model_loaded: bool
    #: null when the model runs elsewhere (queue, RunPod, Modal workers)
    gpu_available: bool | None
    active_jobs: int


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
