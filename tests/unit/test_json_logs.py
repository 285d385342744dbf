"""The log ids (shared/observability/context.py) and the two line formats (handler/logs.py): ids follow
asyncio tasks and threads and never leak between jobs; a JSON line is one object with the fields the
README lists; vLLM's records reach our handler. tests/queue/test_worker_logs.py runs a real queue worker
and the CLI with LOG_FORMAT=json."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from datetime import datetime

import pytest

from handler import logs
from shared.contracts.settings import Settings
from shared.observability.context import IdsFilter, current_ids, log_context

log = logging.getLogger("tests.json_logs")


@pytest.fixture
def lines(restore_logging):
    """LOG_FORMAT=json set up; the lines its handler writes."""
    logs.setup_logging(Settings(_env_file=None, log_format="json", log_level="DEBUG"))
    buffer = io.StringIO()
    logging.getLogger().handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    return lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_log_context_adds_ids_and_restores_them():
    assert current_ids() == {}
    with log_context(job="j1", shard=0):
        with log_context(item="a", shard=None):  # None leaves an id as it was
            assert current_ids() == {"job": "j1", "shard": 0, "item": "a"}
        assert current_ids() == {"job": "j1", "shard": 0}
    assert current_ids() == {}
    with pytest.raises(ValueError, match="unknown log ids"):
        with log_context(jobid="typo"):
            pass


async def test_ids_follow_tasks_and_threads_and_stay_apart():
    seen: dict[str, dict] = {}

    async def item(name: str) -> None:
        with log_context(item=name):
            await asyncio.sleep(0.01)  # the other job's task runs meanwhile
            seen[name] = current_ids()
            seen[name + "-thread"] = await asyncio.to_thread(current_ids)

    async def job(job_id: str, items: list[str]) -> None:
        with log_context(job=job_id, shard=1):
            await asyncio.gather(*(asyncio.create_task(item(n)) for n in items))  # created inside: inherit

    await asyncio.gather(job("j1", ["a", "b"]), job("j2", ["c"]))
    assert seen["a"] == seen["a-thread"] == {"job": "j1", "shard": 1, "item": "a"}
    assert seen["b"] == {"job": "j1", "shard": 1, "item": "b"}
    assert seen["c"] == seen["c-thread"] == {"job": "j2", "shard": 1, "item": "c"}
    assert current_ids() == {}


async def test_an_async_generator_closed_elsewhere_does_not_raise():
    async def gen():
        with log_context(job="g"):
            yield current_ids()
            yield current_ids()

    g = gen()
    assert await g.__anext__() == {"job": "g"}
    await asyncio.create_task(g.aclose())  # closed from another task: another context
    assert current_ids() == {"job": "g"}  # this task's copy stays as the generator left it; no error


def test_a_json_line_has_the_fields_and_only_the_ids_set(lines):
    with log_context(job="j9", worker="w1", attempt=2):
        log.info("two\nlines %s", "here")
    log.warning("no ids", extra={"rows": 3})
    try:
        raise KeyError("k")
    except KeyError:
        with log_context(item="x"):
            log.exception("it broke")
    first, second, third = lines()
    assert list(first) == ["time", "level", "logger", "message", "job", "worker", "attempt"]
    assert first["message"] == "two\nlines here" and first["level"] == "INFO" and first["logger"] == "tests.json_logs"
    assert (first["job"], first["worker"], first["attempt"]) == ("j9", "w1", 2)
    assert first["time"].endswith("Z") and datetime.fromisoformat(first["time"]).tzinfo is not None
    assert second == {"time": second["time"], "level": "WARNING", "logger": "tests.json_logs",
                      "message": "no ids", "rows": 3}
    assert third["item"] == "x" and "job" not in third
    assert third["exc_info"].startswith("Traceback") and "KeyError: 'k'" in third["exc_info"]


def test_plain_lines_end_with_the_ids_the_message_does_not_name():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "job=%s worker=%s attempt=1 running", ("j#1", "w"),
                               None)
    with log_context(job="j", shard=1, worker="w", attempt=1, item="c7"):
        IdsFilter().filter(record)
    assert logs.PlainFormatter(logs.PLAIN_FORMAT).format(record) == \
        "INFO x: job=j#1 worker=w attempt=1 running shard=1 item=c7"
    bare = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert logs.PlainFormatter(logs.PLAIN_FORMAT).format(bare) == "INFO x: hello"


def test_outline_names_the_exception_and_where_never_its_message():
    def inner():
        raise ValueError("the prompt was: SECRET")

    try:
        try:
            inner()
        except ValueError as e:
            raise RuntimeError("wrapping SECRET") from e
    except RuntimeError as e:
        text = logs.outline(e)
    assert "SECRET" not in text
    assert text.startswith("RuntimeError at unit/test_json_logs.py:") and "; from ValueError at " in text
    assert text.endswith(" inner")


def test_json_routes_vllm_through_our_handler(restore_logging):
    vllm = logging.getLogger("vllm")
    own = logging.StreamHandler(io.StringIO())
    own.set_name("vllm")  # what vLLM's dictConfig installs when it configures logging
    vllm.addHandler(own)
    vllm.propagate = False
    try:
        logs.setup_logging(Settings(_env_file=None, log_format="json"))
        assert own not in vllm.handlers and vllm.propagate
    finally:
        vllm.removeHandler(own)
        vllm.propagate = True
    env = logs.engine_process_env(Settings(_env_file=None, log_format="json"))
    assert env["VLLM_CONFIGURE_LOGGING"] == "0" and env["LOG_FORMAT"] == "json"
    assert "VLLM_CONFIGURE_LOGGING" not in logs.engine_process_env(Settings(_env_file=None))


def test_the_engine_core_process_logs_json(tmp_path):
    """A process multiprocessing spawned (vLLM's engine core) gets the JSON handler from the entry point's
    `quiet_spawned_process`, and vLLM's records (no handler of vLLM's own) come out through it."""
    code = ("import logging, multiprocessing\n"
            "multiprocessing.current_process().name = 'EngineCore_DP0'\n"
            "from handler.logs import quiet_spawned_process\n"
            "quiet_spawned_process()\n"
            "logging.getLogger('vllm.v1.engine.core').info('core ready')\n"
            "logging.getLogger('other').info('not shown: the root stays at WARNING')\n")
    env = {**os.environ, "LOG_FORMAT": "json", "VLLM_LOGGING_LEVEL": "INFO"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=tmp_path)  # no .env there
    assert out.returncode == 0, out.stderr
    (line,) = out.stderr.splitlines()
    record = json.loads(line)
    assert (record["logger"], record["level"], record["message"]) == ("vllm.v1.engine.core", "INFO", "core ready")


def test_the_cli_logs_json_without_rich(restore_logging):
    from rich.logging import RichHandler

    from shared.cli.common import setup_logging

    setup_logging(Settings(_env_file=None, log_format="json"))
    (handler,) = logging.getLogger().handlers
    assert not isinstance(handler, RichHandler) and isinstance(handler.formatter, logs.JsonLineFormatter)
    assert any(isinstance(f, IdsFilter) for f in handler.filters)
    setup_logging(Settings(_env_file=None))
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, RichHandler) and isinstance(handler.formatter, logs.PlainFormatter)
