"""`llm-jobs run` end to end: a fresh process boots the engine and runs the grading example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from shared.contracts.models import Result, ResultStatus

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


#: what third-party libraries print while the engine boots and shuts down, and must not, unless -v
NOISE = {
    "traceback": re.compile(r"Traceback \(most recent call last\)"),
    "__del__ at exit": re.compile(r"Exception ignored"),
    "python warning": re.compile(r"\w+Warning: "),
    "torch C++ warning (NUMA)": re.compile(r"^\[W\d{4} |NUMA", re.M),
    "triton": re.compile(r"Triton"),
    "vllm log line": re.compile(r"\b(INFO|WARNING|DEBUG) \d\d-\d\d \d\d:"),
    "third-party progress bar": re.compile(r"Loading safetensors|it/s\]"),
}
#: set in this process's environment when a test boots the engine in-process; they would quiet it
ENGINE_ENV = {"PYTHONWARNINGS", "TORCH_CPP_LOG_LEVEL", "TQDM_DISABLE", "VLLM_LOGGING_LEVEL", "VLLM_LOGGING_STREAM",
              "LOG_LEVEL"}


def test_cli_run_is_quiet(tmp_path):
    """The installed `llm-jobs` command: no traceback at exit, no third-party noise, a readable summary."""
    items = tmp_path / "quiet.jsonl"
    items.write_text("".join(json.dumps({"custom_id": f"q{i}", "prompt": f"Count to {i}."}) + "\n" for i in range(3)))
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_ENV}
    env |= {"MAX_MODEL_LEN": "2048", "COLUMNS": "120", "SQLITE_PATH": str(tmp_path / "jobs.db")}
    command = Path(sys.executable).with_name("llm-jobs")
    proc = subprocess.run(
        [str(command), "run", str(items), "-o", str(tmp_path / "out.jsonl"), "--job-id", "quiet-demo",
         "--max-tokens", "8"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    found = {name for name, pattern in NOISE.items() if pattern.search(proc.stderr)}
    assert not found, proc.stderr[-3000:]
    assert "job quiet-demo:" in proc.stderr and "completion tokens" in proc.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
