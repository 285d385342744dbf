"""`llm-jobs run` end to end: a fresh process boots the engine and runs the grading example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from shared.models import Result, ResultStatus

ROOT = Path(__file__).resolve().parents[2]


def test_cli_runs_the_grading_example(tmp_path):
    out = tmp_path / "grading.results.jsonl"
    env = {**os.environ, "MAX_MODEL_LEN": "2048", "COLUMNS": "120", "SQLITE_PATH": str(tmp_path / "jobs.db")}
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", str(ROOT / "examples/grading/job.json"), "-o", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    # 0: every item ok; 3: the job completed and some items are error results
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "job grading-demo: completed" in proc.stderr
    results = [Result.model_validate_json(line) for line in out.read_text().splitlines()]
    assert sorted(r.custom_id for r in results) == [f"alumne-{i:03d}" for i in range(1, 25)]
    schema = json.loads((ROOT / "examples/grading/job.json").read_text())["response_format"]["json_schema"]["schema"]
    validator = Draft202012Validator(schema)
    ok = [r for r in results if r.status == ResultStatus.ok]
    assert ok and all(validator.is_valid(r.parsed) for r in ok)
    assert all(r.error.code == "invalid_output" for r in results if r.status == ResultStatus.error)
    assert (proc.returncode == 0) == (len(ok) == 24)

    # the same job again: nothing is recomputed, and the output still holds every result
    again = tmp_path / "again.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", str(ROOT / "examples/grading/job.json"), "-o", str(again)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "24 result(s) already stored" in proc.stderr
    assert sorted(again.read_text().splitlines()) == sorted(out.read_text().splitlines())
