"""llm-jobs: contracts, stores, the queue, the server, the SDK and the CLI (docs/architecture.md).

    from shared import AsyncClient
    async with AsyncClient("http", base_url=URL, api_key=KEY) as client:
        job = await client.submit("essays.jsonl", template=TEMPLATE)
        async for event in job.stream(): ...

The names below are loaded on first use, so `import shared.contracts.models` (a GPU worker)
loads only the contracts, never the SDK, the server or the CLI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["ApiError", "AuthError", "ConfigError", "EngineDeadError", "EngineError", "ErrorCode",
                     "InputError", "Issue", "JobFailed", "LLMJobsError", "NotFound", "RateLimited"],
                    "shared.contracts.errors"),
    **dict.fromkeys(["ChunkEvent", "ErrorEvent", "Event", "FinalEvent", "GapEvent", "Outcome",
                     "ProgressEvent", "TrainEvent"],
                    "shared.contracts.events"),
    **dict.fromkeys(["LoraSpec", "TrainConfig", "TrainReport"], "shared.contracts.training"),
    **dict.fromkeys(["Item", "Job", "JobOptions", "JobStatus", "Progress", "Rejection", "ResponseFormat", "Result",
                     "ResultStatus", "Sampling", "Summary", "Usage"], "shared.contracts.models"),
    **dict.fromkeys(["parse_job", "parse_job_text"], "shared.contracts.inputs"),
    **dict.fromkeys(["Settings", "get_settings"], "shared.contracts.settings"),
    **dict.fromkeys(["AsyncClient", "AsyncJob", "Client", "JobHandle"], "shared.sdk"),
}

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
    "ErrorEvent",
    "Event",
    "FinalEvent",
    "GapEvent",
    "InputError",
    "Issue",
    "Item",
    "Job",
    "JobFailed",
    "JobHandle",
    "JobOptions",
    "JobStatus",
    "LLMJobsError",
    "LoraSpec",
    "NotFound",
    "Outcome",
    "Progress",
    "ProgressEvent",
    "RateLimited",
    "Rejection",
    "ResponseFormat",
    "Result",
    "ResultStatus",
    "Sampling",
    "Settings",
    "Summary",
    "TrainConfig",
    "TrainEvent",
    "TrainReport",
    "Usage",
    "get_settings",
    "parse_job",
    "parse_job_text",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shared' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from shared.contracts.errors import (
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
    from shared.contracts.events import (
        ChunkEvent,
        ErrorEvent,
        Event,
        FinalEvent,
        GapEvent,
        Outcome,
        ProgressEvent,
        TrainEvent,
    )
    from shared.contracts.inputs import parse_job, parse_job_text
    from shared.contracts.models import (
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
    from shared.contracts.settings import Settings, get_settings
    from shared.contracts.training import LoraSpec, TrainConfig, TrainReport
    from shared.sdk import AsyncClient, AsyncJob, Client, JobHandle
