"""Training in one process (issue 16): `llm-jobs train start --backend local` from the command line, then
`llm-jobs train compare`; and a cancel through the SDK's local backend that keeps the last checkpoint, which
the job submitted again resumes from. Real trl and peft on the embedded SmolLM2-135M; SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared import AsyncClient
from shared.cli import app as cli_app
from shared.contracts.events import FinalEvent, Outcome, TrainEvent
from shared.contracts.settings import Settings
from shared.contracts.training import TrainReport
from tests.integration.test_training import dataset


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    out = root / "prepared"
    result = CliRunner().invoke(cli_app, ["data", "prepare", str(dataset(root / "d.jsonl", n=40)), "-o", str(out),
                                          "--train-ratio", "0.8", "--no-near-dups"])
    assert result.exit_code == 0, result.output
    return out


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900)


def test_train_start_locally_then_compare_from_the_command_line(small, tmp_path):
    env = {**os.environ, "SQLITE_PATH": str(tmp_path / "jobs.db"), "TRAINING_DIR": str(tmp_path / "training"),
           "LOG_LEVEL": "WARNING"}
    for k in ("DATABASE_URL", "SUPABASE_URL"):
        env.pop(k, None)
    config = tmp_path / "train.yaml"  # the flags win over the file; checkpointing exercises trl's peft path
    config.write_text("max_steps: 50\nlearning_rate: 1.0e-3\ngradient_checkpointing: true\nlora:\n  r: 8\n")
    run = cli(env, "train", "start", str(small), "--adapter", "cli-adapter", "--max-steps", "4", "--batch-size", "4",
              "--save-steps", "2", "--no-merge", "--id", "cli-train", "--config", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "cli-train"  # the id alone on stdout, for scripts
    for text in ("step 4/4", "checkpoint saved (checkpoint-2)", "held-out perplexity (base)", "exported:",
                 "adapter cli-adapter over SmolLM2-135M-Instruct"):
        assert text in run.stderr, (text, run.stderr[-3000:])
    assert not (tmp_path / "training" / "cli-train" / "merged").exists()  # --no-merge

    shown = cli(env, "train", "compare", "cli-adapter", "--json")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert '"adapter_perplexity"' in shown.stdout and '"base_perplexity"' in shown.stdout
    adapter_config = json.loads((tmp_path / "training" / "cli-train" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8  # from the --config file
    again = cli(env, "train", "start", str(small), "--adapter", "cli-adapter", "--max-steps", "0")
    assert again.returncode == 2 and "max_steps" in again.stderr  # checked before anything runs


async def test_cancel_keeps_the_last_checkpoint_and_a_resubmit_resumes_from_it(small, tmp_path):
    settings = Settings(_env_file=None, sqlite_path=tmp_path / "jobs.db", training_dir=tmp_path / "training")
    async with AsyncClient("local", settings=settings) as sdk:
        job = await sdk.train(small, adapter="cancelled", id="cancel-me", max_steps=12, save_steps=3,
                              logging_steps=1, batch_size=4, merge=False)
        steps = []
        async for event in job.stream():
            if isinstance(event, TrainEvent) and event.phase == "train":
                steps.append(event.step)
                if event.step == 4:
                    break
        await job.cancel()
        final = await job.wait(raise_on_failure=False)
        assert final.outcome is Outcome.cancelled and "checkpoint" in final.summary.reason
        kept = sorted((tmp_path / "training" / "cancel-me" / "checkpoints").glob("checkpoint-*"))
        assert kept and int(kept[-1].name.split("-")[1]) >= 4  # saved at the step after the cancel
        assert (await sdk.get("cancel-me"))["status"] == "cancelled"

        again = await sdk.train(small, adapter="cancelled", id="cancel-me", max_steps=12, save_steps=3,
                                logging_steps=1, batch_size=4, merge=False)
        events = [e async for e in again.stream()]
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.outcome is Outcome.completed, final.summary.reason
    resume = next(e for e in events if isinstance(e, TrainEvent) and e.phase == "resume")
    assert resume.step == int(kept[-1].name.split("-")[1])
    trained = [e.step for e in events if isinstance(e, TrainEvent) and e.phase == "train"]
    assert trained == list(range(resume.step + 1, 13))
    assert TrainReport.model_validate(final.summary.training).resumed_from == resume.step
