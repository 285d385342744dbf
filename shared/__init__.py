"""llm-jobs contracts and clients. Imports without vllm or torch.

    from shared import AsyncClient
    async with AsyncClient("http", base_url=URL, api_key=KEY) as client:
        job = await client.submit("essays.jsonl", template=TEMPLATE)
        async for event in job.stream(): ...
"""

from shared.errors import (
    ApiError,
    AuthError,
    ConfigError,
    EngineDeadError,
    EngineError,
    ErrorCode,
    InputError,
    Issue,
    JobFailed,
    LLMJobsError,
    NotFound,
    RateLimited,
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
from shared.sdk import AsyncClient, AsyncJob, Client, JobHandle
from shared.settings import Settings, get_settings

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJob",
    "AuthError",
    "ChunkEvent",
    "Client",
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
    "JobFailed",
    "JobHandle",
    "JobOptions",
    "JobStatus",
    "LLMJobsError",
    "NotFound",
    "Progress",
    "RateLimited",
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
