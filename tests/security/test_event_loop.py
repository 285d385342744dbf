"""One heavy submission must not freeze the API (issue 11, finding 2).

The API runs in a process of its own (benchmarks/healthz_under_load.py); while each of the issue's
four hostile requests is in flight, `/healthz` is polled. Before the fix each froze the event loop
for seconds (nested range loops 4.9 s, `'a'*10**8` 1.7 s, a 100k-property schema about 50 s, an
88k-item body 6.6 s). The target is a p99 under 50 ms, which benchmarks/healthz_under_load.py measures
(README, "Measured figures"). The bound here is three times looser, for a loaded two-core test machine,
and still far under the old freezes. The 88k-item case also checks that full garbage collections
stay deferred while the job is built (shared/server/api/gc_pause.py): each one held the GIL for up to
a few hundred milliseconds.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from benchmarks.healthz_under_load import JSON, api_process, hostile_bodies, measure
from shared.contracts.errors import InputError
from shared.contracts.inputs import parse_job_document
from shared.contracts.prepare import Limits

#: p99 bound; the max may reach four times it
BOUND_MS = 150
BODIES = hostile_bodies()


@pytest.fixture(scope="module")
def api():
    with api_process() as url:
        # warm up: the first request of each kind imports and compiles code (no .pyc in a fresh clone),
        # holding the GIL; that is start-up, not the stall this test is about
        for content_type, body in BODIES.values():
            httpx.post(f"{url}/v1/jobs", content=body, headers={"content-type": content_type}, timeout=120)
        yield url


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(BODIES))
def test_healthz_answers_while_a_heavy_job_is_validated(api, name):
    content_type, body = BODIES[name]
    figures = measure(api, name, content_type, body)
    print(figures.line())
    assert figures.status in (202, 422), figures
    assert figures.p99_ms < BOUND_MS and figures.max_ms < 4 * BOUND_MS, figures.line()


@pytest.mark.timeout(60)
def test_the_88k_item_job_is_accepted_and_counted(api):
    r = httpx.post(f"{api}/v1/jobs", content=BODIES["body: 88k items"][1], headers={"content-type": JSON},
                   timeout=120)
    assert r.status_code == 202 and r.json()["total"] == 88_000


def test_validation_over_its_time_budget_is_refused_naming_it():
    from shared.server.api.intake import parse_body

    doc = {"template": "{% for i in range(5000) %}{{ i }}{% endfor %}",
           "items": [{"custom_id": f"c{i}", "fields": {}} for i in range(2000)]}
    started = time.monotonic()
    with pytest.raises(InputError) as e:
        parse_body(json.dumps(doc).encode(), JSON, Limits(), job_id=None, strict=True, timeout_s=0.2)
    assert time.monotonic() - started < 2
    (issue,) = e.value.issues
    assert issue.field == "items" and "validation took over 0.2 s" in issue.message
    assert parse_job_document({**doc, "items": doc["items"][:2]}).total == 2  # the same job, smaller, passes

