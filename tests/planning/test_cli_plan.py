"""`llm-jobs plan` (shared/cli/plan.py): the example job planned on this machine and two GPUs, as JSON and as a
table; unknown GPUs and bad tables refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.planning.plan import Plan
from shared.planning.tables import CALIBRATION_FILE

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "examples" / "prompts.jsonl"
runner = CliRunner()


@pytest.fixture(scope="module")
def planned(model_dir) -> Plan:
    r = runner.invoke(app, ["plan", str(PROMPTS), "--gpus", "cpu,L40S,H100", "--json"])
    assert r.exit_code == 0, r.output
    return Plan.model_validate_json(r.stdout)


def test_json_plan_of_the_example(planned):
    lines = PROMPTS.read_text().splitlines()
    assert planned.tokens.items == len(lines) and planned.tokens.prompt_tokens > 0
    assert planned.tokens.tokenizer == "SmolLM2-135M-Instruct" and planned.params_b == pytest.approx(0.135)
    assert {r.gpu for r in planned.rows} == {"cpu", "L40S", "H100"}
    # both platforms for the GPUs (RunPod flex and active, Modal), this machine once
    assert {(r.gpu, r.platform, r.tier) for r in planned.rows} == {
        ("cpu", "local", None), *((g, "runpod", t) for g in ("L40S", "H100") for t in ("flex", "active")),
        ("L40S", "modal", None), ("H100", "modal", None)}
    # billed by use first, ranked by cost; then the always-on active workers, ranked by cost
    by_use = [r.cost_usd for r in planned.rows if r.plannable and r.tier != "active"]
    active = [r.cost_usd for r in planned.rows if r.plannable and r.tier == "active"]
    assert [r.cost_usd for r in planned.rows if r.plannable] == sorted(by_use) + sorted(active)
    assert planned.recommendation == planned.rows[0] and planned.reason
    assert [t.name for t in planned.tables] == ["gpus", "prices", "calibration"]
    assert any("upper bound" in a for a in planned.assumptions)


def test_the_table(model_dir):
    r = runner.invoke(app, ["plan", str(PROMPTS), "--gpus", "L40S,H100", "--platform", "modal"])
    assert r.exit_code == 0, r.output
    assert "recommended:" in r.stdout and "L40S on Modal" in r.stdout and "assumptions" in r.stdout
    assert "RunPod" not in r.stdout.split("assumptions")[0]


def test_an_unknown_gpu_exits_2_naming_it_and_the_known_ones():
    r = runner.invoke(app, ["plan", str(PROMPTS), "--gpus", "L40S,V100"])
    assert r.exit_code == 2
    assert "V100" in r.output and "A100-80GB" in r.output and "H200" in r.output


def test_a_bad_calibration_table_exits_2_naming_the_field(tmp_path):
    doc = json.loads(CALIBRATION_FILE.read_text())
    doc["rows"][0]["decode_tps"] = -1
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps(doc))
    r = runner.invoke(app, ["plan", str(PROMPTS), "--calibration", str(bad)])
    assert r.exit_code == 2 and "rows.0.decode_tps" in r.output
