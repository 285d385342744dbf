"""`llm-jobs validate` and the input checks of `llm-jobs run`, which fail before any engine work."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shared.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_examples_are_valid():
    for name in ("grading/job.json", "prompts.jsonl"):
        r = runner.invoke(app, ["validate", str(ROOT / "examples" / name)])
        assert r.exit_code == 0, r.output


def test_openai_example_has_one_wrong_model_line_and_model_flag_maps_it():
    path = str(ROOT / "examples" / "openai_batch.jsonl")
    r = runner.invoke(app, ["validate", path])
    assert r.exit_code == 2 and "body.model" in r.output and "line 11" in r.output
    assert runner.invoke(app, ["validate", path, "--model", "SmolLM2-135M-Instruct"]).exit_code == 0


def test_run_refuses_a_job_level_error_before_booting(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text(json.dumps({"template": "{% if %}", "items": [{"fields": {"a": 1}}]}))
    r = runner.invoke(app, ["run", str(bad), "-o", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 2 and "template" in r.output
    assert not (tmp_path / "out.jsonl").exists()


def test_run_strict_refuses_a_bad_item(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"prompt": "ok"}\n{"promt": "typo"}\n')
    r = runner.invoke(app, ["run", str(f), "--strict", "-o", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 2 and "line 2" in r.output
