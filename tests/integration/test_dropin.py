"""The grading service's own client, written from its contract alone (examples/dropin_client.py), against
`llm-jobs serve` on loopback: the local dispatcher, the real engine, 100 Catalan answers graded by the
grade-ca task. The server is a process of its own, started as a user would; so is the client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from testkit.serve import free_port
from tests.integration.conftest import TEST_MAX_MODEL_LEN

ROOT = Path(__file__).resolve().parents[2]


def answers(n: int) -> list[dict]:
    """n answers from the grading suite's 42 (a teacher's real-looking cases), with their own ids."""
    cases = yaml.safe_load((ROOT / "examples/evals/grading_ca.yaml").read_text(encoding="utf-8"))["cases"]
    return [{"id_alumno": f"alumne-{i:03d}", **cases[i % len(cases)]["fields"]} for i in range(n)]


def test_the_services_client_grades_100_answers_through_llm_jobs_serve(tmp_path):
    port = free_port()
    env = {**os.environ, "DISPATCHER": "local", "SQLITE_PATH": str(tmp_path / "jobs.db"), "SUPABASE_URL": "",
           "DATABASE_URL": "", "API_KEYS": "", "MAX_MODEL_LEN": str(TEST_MAX_MODEL_LEN), "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        health: dict = {}
        while time.monotonic() < deadline and not health.get("model_loaded"):  # the engine boots on first look
            try:
                health = httpx.get(f"{url}/health", timeout=120).json()
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert health.get("model_loaded") is True, health
        items = tmp_path / "answers.json"
        items.write_text(json.dumps(answers(100), ensure_ascii=False), encoding="utf-8")
        out = tmp_path / "grades.json"
        started = time.monotonic()
        run = subprocess.run([sys.executable, str(ROOT / "examples/dropin_client.py"), "--url", url, "--items",
                              str(items), "-o", str(out)], capture_output=True, text=True, timeout=900,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=tmp_path)
        took = time.monotonic() - started
        assert run.returncode == 0, run.stderr[-3000:]
        # the next /evaluate is estimated from the throughput this job measured, not from the constant
        first = httpx.get(f"{url}/v1/jobs/{json.loads(out.read_text())['job_id']}", timeout=30).json()["summary"]
        measured = (first["completed"] + first["failed"]) / first["elapsed_s"]
        second = httpx.post(f"{url}/evaluate", json={"items": answers(40)}, timeout=30).json()
        assert abs(second["estimated_time_seconds"] - 40 / measured) <= 0.1, (second, first)
    finally:
        server.terminate()
        server.wait(timeout=60)
    graded = json.loads(out.read_text(encoding="utf-8"))
    results = graded["results"]
    assert graded["complete"]["status"] == "completed" and graded["complete"]["total_processed"] == 100
    assert sorted(r["id_alumno"] for r in results) == [f"alumne-{i:03d}" for i in range(100)]
    batches = [line for line in run.stderr.splitlines() if line.startswith("batch ")]
    assert len(batches) == 10, run.stderr[-2000:]
    valid = [r for r in results if r.get("nota") is not None]
    assert all(0 <= r["nota"] <= 5 and isinstance(r["feedback"], str) for r in valid)
    # a 135M model: most answers fit the schema; the rest are error results that say why
    assert len(valid) >= 50 and all(r.get("error") for r in results if r.get("nota") is None)
    estimate = next(line for line in run.stderr.splitlines() if line.startswith("job "))
    print(f"100 answers in {took:.1f} s through the drop-in; {estimate}; {len(valid)} graded")
