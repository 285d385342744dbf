"""Logging for every llm-jobs process: levels, and the third-party noise kept out of the output.

`setup_logging` is what RunPod and Modal workers call; the CLI calls it too, with its Rich handler
(shared/cli/common.py). This module imports only the standard library and Settings: never typer,
rich, fastapi or vLLM.

Unless LOG_LEVEL=DEBUG (the CLI's `-v`), output is quiet: third-party loggers speak from WARNING
(vLLM from VLLM_LOGGING_LEVEL), Python warnings (torch's FutureWarnings) are dropped, and the engine
process is started quiet too (see `engine_process_env`). With LOG_LEVEL=DEBUG our own loggers speak
from DEBUG, third-party ones from INFO, vLLM from INFO at least, and warnings are logged. The HTTP clients
(httpx, httpcore) always speak from WARNING: their INFO lines carry request URLs, which may carry tokens.

LOG_FORMAT picks the lines: `plain` (`LEVEL logger: message`, then the ids the record carries as
` key=value`) or `json` (one JSON object per line: `time` in ISO 8601 UTC, `level`, `logger`, `message`,
the ids, `exc_info` as text when there is a traceback; docs/architecture.md, "Logs"). The ids are the job,
shard, item, worker, attempt and platform request a record was written for
(shared/observability/context.py): `IdsFilter` sits on the root handler in both formats. With json,
vLLM's records go through that same handler: the engine is started with VLLM_CONFIGURE_LOGGING=0, so
vLLM adds no handler of its own, and in its spawned engine core process `quiet_spawned_process`
installs the JSON handler.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS, merge_record_extra
from pythonjsonlogger.json import JsonFormatter

from shared.contracts.models import Job
from shared.contracts.settings import Settings, get_settings
from shared.contracts.shards import ShardRef
from shared.observability.context import FIELDS, IdsFilter, record_ids

#: libraries that log at INFO about things a user cannot act on (httpx: one line per HTTP request); never
#: below INFO, even verbose: aiosqlite's and hpack's DEBUG lines carry what they send (the rows a store
#: writes: prompt and result text; HTTP/2 headers: tokens)
THIRD_PARTY = ("torch", "transformers", "huggingface_hub", "httpx", "httpcore", "filelock", "urllib3", "asyncio",
               "aiosqlite", "hpack")
#: HTTP clients that log every request's URL at INFO ("HTTP Request: POST <url> ..."); a URL may carry a
#: token, so these speak from WARNING even when verbose
HTTP_CLIENTS = ("httpx", "httpcore")
#: the plain format of worker logs (RunPod and Modal add their own timestamps)
PLAIN_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: record attributes that are not a caller's `extra=` fields: left out of JSON lines (vLLM's process name,
#: uvicorn's coloured copy of the message, asyncio's task name)
NOT_EXTRAS = ("taskName", "vllm_process_name", "color_message")


class PlainFormatter(logging.Formatter):
    """`fmt`'s line, then the record's ids as ` key=value`, those its message does not name already (the
    queue worker's own lines start `job=... worker=... attempt=N`, and tests read them so)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = " ".join(f"{k}={v}" for k, v in record_ids(record).items() if f"{k}=" not in record.message)
        return f"{line} {ids}" if ids else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record, on one line: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`,
    `message`, the ids the record carries (those not set are left out), `exc_info` and `stack_info` as
    text when there is one, then any `extra=` fields the caller passed."""

    def __init__(self) -> None:
        super().__init__(reserved_attrs=[*RESERVED_ATTRS, *FIELDS, *NOT_EXTRAS])

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        when = datetime.fromtimestamp(record.created, tz=UTC)
        log_data.update(time=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                        level=record.levelname, logger=record.name, message=record.message)
        log_data.update(record_ids(record))
        log_data.update(message_dict)  # exc_info, stack_info (or the fields of a dict logged as the message)
        merge_record_extra(record, log_data, reserved=self._skip_fields)


def stderr_handler(settings: Settings) -> logging.Handler:
    """A handler to stderr in LOG_FORMAT, with the ids filter."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLineFormatter() if settings.log_format == "json" else PlainFormatter(PLAIN_FORMAT))
    return with_ids(handler)


def with_ids(handler: logging.Handler) -> logging.Handler:
    """`handler`, with `IdsFilter` on it (once)."""
    if not any(isinstance(f, IdsFilter) for f in handler.filters):
        handler.addFilter(IdsFilter())
    return handler


def is_verbose(settings: Settings) -> bool:
    """LOG_LEVEL=DEBUG (the CLI's `-v`) lets third-party noise through."""
    return settings.log_level == "DEBUG"


def vllm_log_level(settings: Settings) -> str:
    """VLLM_LOGGING_LEVEL, lowered to INFO when verbose (vLLM's DEBUG only when asked for)."""
    level = settings.vllm_logging_level.upper()
    known = logging.getLevelNamesMapping()
    if is_verbose(settings) and known.get(level, logging.INFO) > logging.INFO:
        return "INFO"
    return level


def work_ids(work: Job | ShardRef) -> dict[str, str | int]:
    """The log ids of a job or shard being run (`log_context(**work_ids(work))`): its job's id and its shard's
    number (a whole job is its own one shard: 0)."""
    return {"job": work.job_id, "shard": work.shard if isinstance(work, ShardRef) else 0}


def outline(e: BaseException, frames: int = 4) -> str:
    """`e`'s type and the last `frames` places it passed through (innermost last), then its causes', without
    any exception's message: the text of an exception raised over an item may quote the item (a prompt, an
    output), and logs never carry that. The item's own result keeps the message."""
    parts: list[str] = []
    seen: set[int] = set()
    at: BaseException | None = e
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        where = " > ".join(f"{'/'.join(PurePath(f.filename).parts[-2:])}:{f.lineno} {f.name}"
                           for f in traceback.extract_tb(at.__traceback__)[-frames:])
        parts.append(f"{type(at).__qualname__} at {where}" if where else type(at).__qualname__)
        at = at.__cause__ or (None if at.__suppress_context__ else at.__context__)
    return "; from ".join(parts)


def setup_logging(settings: Settings, handler: logging.Handler | None = None) -> None:
    """Root logger at LOG_LEVEL through `handler` (by default, LOG_FORMAT lines on stderr), noise filtered.

    A `handler` given (the CLI's Rich one) keeps its own formatter; it gets the ids filter."""
    verbose = is_verbose(settings)
    handler = with_ids(handler) if handler is not None else stderr_handler(settings)
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    if settings.log_format == "json":
        vllm_through_root()
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    quiet_http_clients()
    # vLLM logs while it is imported, before it configures its own logger (VLLM_LOGGING_LEVEL);
    # until then its records reach our handler ("Triton is installed, but ...")
    logging.getLogger("vllm").setLevel(vllm_log_level(settings))
    # Python warnings become records of the `py.warnings` logger: shown when verbose, dropped otherwise
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)


def vllm_through_root() -> None:
    """vLLM's records go up to the root handler (JSON lines) rather than to a handler of vLLM's own, in case
    vLLM configured one already in this process (it does when its engine starts with
    VLLM_CONFIGURE_LOGGING=1; `engine_process_env` sets 0 with LOG_FORMAT=json)."""
    vllm = logging.getLogger("vllm")
    for h in [h for h in vllm.handlers if h.get_name() == "vllm"]:
        vllm.removeHandler(h)
    vllm.propagate = True


def quiet_http_clients() -> None:
    """httpx and httpcore from WARNING, whatever else is set (the API server calls this too, so an app mounted
    by Modal or run by a bare uvicorn never logs request URLs)."""
    for name in HTTP_CLIENTS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def engine_process_env(settings: Settings) -> dict[str, str]:
    """Environment for vLLM's engine process, which writes to our stderr: set before it starts.

    Its C++ warnings (torch's NUMA binding notice) and Python warnings are printed before any
    Python logging exists there, and its progress bars (loading weights) would break the CLI's.
    """
    env = {
        "VLLM_LOGGING_LEVEL": vllm_log_level(settings),
        # stdout is for results (`llm-jobs results`), never for vLLM's log lines
        "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    }
    if not is_verbose(settings):
        env |= {"TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    if settings.log_format == "json":
        # vLLM adds no handler of its own (it would write plain lines): its records reach ours, here through
        # `setup_logging`'s root handler, in the engine core through `quiet_spawned_process`'s, which reads
        # LOG_FORMAT from here
        env |= {"VLLM_CONFIGURE_LOGGING": "0", "LOG_FORMAT": "json"}
    return env


def quiet_spawned_process() -> None:
    """Quiet vLLM's import in a process that multiprocessing spawned (vLLM's engine core).

    A spawned process imports the parent's main module (as `__mp_main__`) before anything else,
    so entry points call this at import. vLLM logs while it is imported, before it configures its
    loggers, and those records would reach stderr through logging's last resort. Here they follow
    the VLLM_LOGGING_LEVEL the parent exported (`engine_process_env`). With LOG_FORMAT=json, the
    process also gets the JSON handler on stderr: vLLM configures none there (VLLM_CONFIGURE_LOGGING=0),
    so its records come out as JSON lines too. In any other process, nothing.
    """
    # spawn names the process before it imports the main module (parent_process() comes later)
    if multiprocessing.current_process().name == "MainProcess":
        return
    settings = get_settings()
    logging.getLogger("vllm").setLevel(settings.vllm_logging_level.upper())
    if settings.log_format == "json":  # the root's level stays WARNING: only vLLM's own level is lowered
        logging.basicConfig(handlers=[stderr_handler(settings)], force=True)
        logging.captureWarnings(True)  # Python warnings (shown when verbose) as JSON lines too
