"""Fuzz the HTTP API with schemathesis against its own OpenAPI document: no input gives a 500.

The API runs under uvicorn on loopback with a real SQLite store; the dispatcher records jobs
instead of running them (the engine is not what is fuzzed here).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import ThreadedServer
from tests.fakes import RecordingDispatcher

KEY = "fuzz-key"


def _server(tmp_dir) -> ThreadedServer:
    s = Settings(_env_file=None, api_keys=KEY, rate_limit_per_minute=0, sse_poll_s=0.05, max_body_bytes=64 * 1024)
    store = SQLiteStore(tmp_dir / "fuzz.db")
    return ThreadedServer(create_app(s, store=store, dispatcher=RecordingDispatcher())).start()


import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

# the API takes JSONL bodies (items or OpenAI Batch lines) as text
schemathesis.serializer.alias("application/jsonl", "text/plain")
SERVER = _server(Path(tempfile.mkdtemp(prefix="llm-jobs-fuzz-")))
schema = schemathesis.openapi.from_url(f"{SERVER.url}/openapi.json")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error], timeout=10)
