"""llm-jobs contracts and clients. Imports without vllm or torch."""

from shared.errors import (
    ConfigError,
    EngineDeadError,
    EngineError,
    ErrorCode,
    InputError,
    Issue,
    LLMJobsError,
)
from shared.inputs import parse_job, parse_job_text
from shared.models import (
    ChunkEvent,
    Event,
    FinalEvent,
    Item,
    Job,
    JobOptions,
    JobStatus,
    Progress,
    Rejection,
    ResponseFormat,
    Result,
    ResultStatus,
    Sampling,
    Summary,
    Usage,
)
from shared.settings import Settings, get_settings

__all__ = [
    "ChunkEvent",
    "ConfigError",
    "EngineDeadError",
    "EngineError",
    "ErrorCode",
    "Event",
    "FinalEvent",
    "InputError",
    "Issue",
    "Item",
    "Job",
    "JobOptions",
    "JobStatus",
    "LLMJobsError",
    "Progress",
    "Rejection",
    "ResponseFormat",
    "Result",
    "ResultStatus",
    "Sampling",
    "Settings",
    "Summary",
    "Usage",
    "get_settings",
    "parse_job",
    "parse_job_text",
]
