"""The llm-jobs error tree.

    LLMJobsError
    ├── ConfigError         settings that cannot work (bad model path, missing package)
    ├── InputError          job-level input that cannot run; carries every Issue found
    │   └── PayloadTooLarge the job is over its transport's size limit (Upstash, RunPod's /run): 413
    ├── EngineError         the engine could not serve a request
    │   └── EngineDeadError the engine is gone: the job fails, with this as its reason
    ├── StoreError          the store refused a call (a bug or a schema mismatch: not retried)
    │   └── StoreUnavailable the store could not be reached in time (retried with backoff)
    ├── QueueError          the queue refused a call (a wrong token, a bad command)
    │   └── QueueUnavailable the queue could not be reached in time
    └── ApiError            a backend (our API, RunPod, Modal) answered with an error (SDK side)
        ├── AuthError       401/403: no key, or a wrong one
        ├── NotFound        404: no such job
        ├── RateLimited     429 after the retries
        └── JobFailed       the job ended failed (engine death, store outage), with its reason

Per-item failures are not exceptions in results: they become `Result(status="error",
error=ItemError(code, message))`. Inside the engine adapter an `ItemFailure` carries one
item's failure up to the runner, which records it and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ErrorCode(StrEnum):
    """Codes found in `Result.error.code`."""

    #: the item failed validation (bad field, template error, over a limit)
    invalid_item = "invalid_item"
    #: an OpenAI line named a model this engine does not serve
    model_not_found = "model_not_found"
    #: the prompt does not fit the model's context window
    prompt_too_long = "prompt_too_long"
    #: the output did not parse or did not match the job's JSON schema
    invalid_output = "invalid_output"
    #: the item exceeded `ITEM_TIMEOUT_S`
    timeout = "timeout"
    #: the engine rejected or failed this one request
    engine_error = "engine_error"


#: HTTP-style status codes used when a result is written as an OpenAI Batch output line.
STATUS_CODES: dict[str, int] = {
    ErrorCode.invalid_item: 400,
    ErrorCode.model_not_found: 404,
    ErrorCode.prompt_too_long: 400,
    ErrorCode.invalid_output: 422,
    ErrorCode.timeout: 408,
    ErrorCode.engine_error: 500,
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation problem, located by item index and/or file line and field."""

    message: str
    field: str = ""
    index: int | None = None
    line: int | None = None
    code: ErrorCode = ErrorCode.invalid_item

    def where(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        elif self.index is not None:
            parts.append(f"item {self.index}")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"message": self.message, "field": self.field, "index": self.index, "line": self.line,
                "code": str(self.code)}

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class LLMJobsError(Exception):
    """Base of every error llm-jobs raises on purpose."""


class ConfigError(LLMJobsError):
    """The settings cannot work."""


class InputError(LLMJobsError):
    """Job-level input is invalid; nothing was run."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues[:10]) + (" ..." if len(issues) > 10 else ""))


class PayloadTooLarge(InputError):
    """The job, as its transport would carry it, is over that transport's size limit (Upstash's per
    request, RunPod's /run body). It is refused before anything is sent; the API answers 413."""

    def __init__(self, *, transport: str, size: int, limit: int, reference: bool = False):
        self.transport, self.size, self.limit = transport, size, limit
        over = (f"{size / 2**20:.1f} MiB ({size} bytes) as a request to {transport}, over its limit of "
                f"{limit / 2**20:.1f} MiB ({limit} bytes) a request; nothing was sent. ")
        #: the whole sentence, for the API's 413 and the log
        self.message = (
            f"this job's options (its template, schema and metadata; its items stay in the store) are {over}"
            "Make them smaller: keep big data in the items, not in the metadata or the template"
            if reference else
            f"this job is {over}Split it into smaller jobs, or submit it through the API or `llm-jobs submit`, "
            "which stage its items in the store and send only references")
        super().__init__([Issue(self.message, field="metadata" if reference else "items")])


class EngineError(LLMJobsError):
    """The engine could not serve a request."""


class EngineDeadError(EngineError):
    """The engine died; every job on it fails with this reason."""


class StoreError(LLMJobsError):
    """The store refused a call; retrying will not help."""


class StoreUnavailable(StoreError):
    """The store could not be reached or timed out; safe to retry (every write is idempotent)."""


class QueueError(LLMJobsError):
    """The queue refused a call."""


class QueueUnavailable(QueueError):
    """The queue could not be reached or timed out."""


class ApiError(LLMJobsError):
    """A backend answered with an error; `status` is its HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class AuthError(ApiError):
    """No API key (401) or a wrong one (403)."""


class NotFound(ApiError):
    """No such job."""


class RateLimited(ApiError):
    """Still rate limited after the retries."""


class JobFailed(ApiError):
    """The job ended `failed`; the message is its reason. Results stored before stay readable."""


class ItemFailure(Exception):
    """One item failed; the runner turns this into an error result."""

    def __init__(self, code: ErrorCode, message: str, *, field: str = "", text: str | None = None):
        self.code = code
        self.field = field
        self.detail = message
        self.message = f"field '{field}': {message}" if field else message
        self.text = text
        super().__init__(f"{code}: {self.message}")


def issues_of(e: ValidationError, *, index: int | None = None, line: int | None = None) -> list[Issue]:
    """Each of a ValidationError's errors as an Issue naming its field (dotted: `sampling.temperature`)."""
    out = []
    for err in e.errors():
        field = ".".join(str(p) for p in err["loc"])
        out.append(Issue(err["msg"], field=field, index=index, line=line))
    return out
