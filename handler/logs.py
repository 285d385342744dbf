"""Logging for every llm-jobs process: levels, and the third-party noise kept out of the output.

`setup_logging` is what RunPod and Modal workers call; the CLI calls it too, with its Rich handler
(shared/cli/common.py). This module imports only the standard library and Settings: never typer,
rich, fastapi or vLLM.

Unless LOG_LEVEL=DEBUG (the CLI's `-v`), output is quiet: third-party loggers speak from WARNING
(vLLM from VLLM_LOGGING_LEVEL), Python warnings (torch's FutureWarnings) are dropped, and the engine
process is started quiet too (see `engine_process_env`). With LOG_LEVEL=DEBUG our own loggers speak
from DEBUG, third-party ones from INFO, vLLM from INFO at least, and warnings are logged. The HTTP clients
(httpx, httpcore) always speak from WARNING: their INFO lines carry request URLs, which may carry tokens.
"""

from __future__ import annotations

import logging
import multiprocessing

from shared.contracts.settings import Settings, get_settings

#: libraries that log at INFO about things a user cannot act on (httpx: one line per HTTP request)
THIRD_PARTY = ("torch", "transformers", "huggingface_hub", "httpx", "httpcore", "filelock", "urllib3", "asyncio")
#: HTTP clients that log every request's URL at INFO ("HTTP Request: POST <url> ..."); a URL may carry a
#: token, so these speak from WARNING even when verbose
HTTP_CLIENTS = ("httpx", "httpcore")
#: the plain format of worker logs (RunPod and Modal add their own timestamps)
PLAIN_FORMAT = "%(levelname)s %(name)s: %(message)s"


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


def setup_logging(settings: Settings, handler: logging.Handler | None = None) -> None:
    """Root logger at LOG_LEVEL through `handler` (plain lines on stderr by default), noise filtered."""
    verbose = is_verbose(settings)
    if handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    quiet_http_clients()
    # vLLM logs while it is imported, before it configures its own logger (VLLM_LOGGING_LEVEL);
    # until then its records reach our handler ("Triton is installed, but ...")
    logging.getLogger("vllm").setLevel(vllm_log_level(settings))
    # Python warnings become records of the `py.warnings` logger: shown when verbose, dropped otherwise
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)


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
    return env


def quiet_spawned_process() -> None:
    """Quiet vLLM's import in a process that multiprocessing spawned (vLLM's engine core).

    A spawned process imports the parent's main module (as `__mp_main__`) before anything else,
    so entry points call this at import. vLLM logs while it is imported, before it configures its
    loggers, and those records would reach stderr through logging's last resort. Here they follow
    the VLLM_LOGGING_LEVEL the parent exported (`engine_process_env`). In any other process, nothing.
    """
    # spawn names the process before it imports the main module (parent_process() comes later)
    if multiprocessing.current_process().name == "MainProcess":
        return
    logging.getLogger("vllm").setLevel(get_settings().vllm_logging_level.upper())
