"""Fuzz the HTTP API with schemathesis against its own OpenAPI document: no input gives a 500.

The API runs under uvicorn on loopback with a real SQLite store; the dispatcher records jobs
instead of running them (the engine is not what is fuzzed here).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ensure_resource_availability,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

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


# ## Stateful: submit, then follow the OpenAPI links (get, results, events, cancel) with the id it answered


#: what must hold on every step. Not positive_data_acceptance: a body can match the schema and still be refused
#: (an empty JSONL string, a repeated custom_id, a template that needs a field), and that is a 422 by design.
STATEFUL_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_schema_conformance, use_after_free, ensure_resource_availability]


class Workflow(schema.as_state_machine()):
    def get_call_kwargs(self, case):
        return {"headers": {"Authorization": f"Bearer {KEY}"}, "timeout": 10}

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs or None)


TestWorkflow = Workflow.TestCase
TestWorkflow.settings = settings(max_examples=15, stateful_step_count=6, deadline=None,
                                 suppress_health_check=list(HealthCheck))
