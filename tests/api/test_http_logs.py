"""httpx logs one INFO line per request ("HTTP Request: POST <url> ..."): URLs can carry tokens, so the
httpx and httpcore loggers speak from WARNING in every process, verbose or not, the API server included."""

from __future__ import annotations

import logging

import httpx
import pytest

from handler import logs
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.fakes import RecordingDispatcher

HTTP_LOGGERS = ("httpx", "httpcore")




async def request_with_a_token_in_the_url(caplog, tmp_path) -> None:
    app = create_app(Settings(_env_file=None, rate_limit_per_minute=0), store=SQLiteStore(tmp_path / "j.db"),
                     dispatcher=RecordingDispatcher())
    async with LoopServer(app) as server, httpx.AsyncClient(base_url=server.url) as client:
        caplog.clear()
        await client.get("/healthz", params={"token": "s3cret-token"})
        logging.getLogger("tests.http_logs").warning("probe")
    await app.state.llm_jobs.lifecycle.store.close()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_setup_logging_keeps_httpx_request_lines_out_even_when_verbose(restore_logging, caplog, tmp_path,
                                                                                level):
    logs.setup_logging(Settings(_env_file=None, log_level=level))
    for name in HTTP_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    logging.getLogger().addHandler(caplog.handler)  # setup_logging replaced the root's handlers
    caplog.set_level(logging.DEBUG)  # the root takes everything: only the loggers' own levels filter
    await request_with_a_token_in_the_url(caplog, tmp_path)
    assert "probe" in caplog.text  # the capture works
    assert "s3cret-token" not in caplog.text and "HTTP Request" not in caplog.text


async def test_the_api_server_quiets_httpx_whatever_set_up_logging(restore_logging, caplog, tmp_path):
    # an app mounted elsewhere (Modal's web function) or run by a bare uvicorn: nobody called setup_logging
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    caplog.set_level(logging.DEBUG)
    await request_with_a_token_in_the_url(caplog, tmp_path)
    assert "probe" in caplog.text
    assert "s3cret-token" not in caplog.text and "HTTP Request" not in caplog.text
    for name in HTTP_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
