"""Metrics where a worker runs: `llm-jobs worker --metrics-port N` (METRICS_PORT) serves prometheus-client's HTTP
server over this process's registry, so a queue worker's runner metrics (and vLLM's `vllm:*`) can be scraped, and
a port already taken stops the worker at once; the RunPod harness (`llm-jobs serve-runpod`) answers /metrics too."""

from __future__ import annotations

import socket

import httpx
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families

from handler.platforms.runpod_harness import create_harness_app
from shared.cli.queue_cmds import _serve_metrics
from shared.observability.metrics import ITEMS
from testkit.serve import free_port


def test_the_worker_serves_its_registry_on_the_port():
    port = free_port()
    ITEMS.labels(status="ok").inc(3)
    server = _serve_metrics("127.0.0.1", port)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert r.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        ok = [s.value for s in families["llm_jobs_items"].samples
              if s.name == "llm_jobs_items_total" and s.labels == {"status": "ok"}]
        assert ok and ok[0] >= 3
    finally:
        server.shutdown()
        server.server_close()


def test_no_port_serves_nothing():
    assert _serve_metrics("127.0.0.1", None) is None


def test_a_port_taken_exits_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(typer.Exit) as e:
            _serve_metrics("127.0.0.1", taken.getsockname()[1])
        assert e.value.exit_code == 2


async def test_the_runpod_harness_answers_metrics():
    async def handler(job):
        yield {"ok": True}

    ITEMS.labels(status="error").inc()
    app = create_harness_app(handler)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://harness.test") as client:
        r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {s.name for f in text_string_to_metric_families(r.text) for s in f.samples}
    assert "llm_jobs_items_total" in names
