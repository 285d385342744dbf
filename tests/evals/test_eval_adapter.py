"""Eval runs answered by a LoRA adapter (issue 16), and `llm-jobs train compare`.

- `open_run(..., adapter=)` gives the run's job the adapter, and a resumed run keeps it; `run_suite`
  (shared/cli/evals.py) runs it on an engine that loads it; the API and the SDK name it.
- `llm-jobs eval run SUITE --adapter NAME` boots the engine with LoRA on (the fake engine, no vLLM here).
- `train compare ADAPTER`: the training figures of the store's record as a table and as JSON; with `--suite`,
  the suite run by the base and by the adapter side by side (the fake engine).
- One integration test: `train compare` with a real peft adapter of the embedded model on the vLLM CPU engine,
  booted by the command itself in a subprocess (a three-case suite, 12 tokens an answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from handler.evals import all_scores, open_run
from shared.contracts.adapters import AdapterRecord
from shared.contracts.errors import InputError
from shared.contracts.events import Outcome
from shared.contracts.settings import Settings, get_settings
from shared.evals.suite import parse_suite
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tests/fixtures/evals/adapter_small.yaml"
#: what the adapter knows and the base does not (the fake engine answers by the request's adapter)
ANSWERS = {"france": "Paris", "italy": "Rome", "water": "H2O"}
METRICS = {"steps": 30, "epochs": 1.5, "train_examples": 80, "eval_examples": 20, "train_tokens": 12000,
           "tokens_per_s": 850.5, "runtime_s": 14.1, "first_loss": 2.5, "last_loss": 1.2, "eval_loss": 1.4,
           "base_perplexity": 12.0, "adapter_perplexity": 8.0}


def tuned_answers(request) -> str:
    return ANSWERS[request.custom_id] if request.adapter else "I do not know."


def trained(tmp_path: Path, name: str = "grades-ca", *, metrics: dict | None = METRICS) -> AdapterRecord:
    """A trained adapter's record, its files laid out as a training job writes them (adapter/, merged/, card)."""
    job_dir = tmp_path / "training" / "train-1"
    (job_dir / "adapter").mkdir(parents=True)
    (job_dir / "merged").mkdir()
    (job_dir / "adapter" / "README.md").write_text("# card\n")
    return AdapterRecord(name=name, base_model="SmolLM2-135M-Instruct", path=str(job_dir / "adapter"),
                         config={"adapter": name, "lora": {"r": 8}}, metrics=metrics, job_id="train-1")


async def put(db: Path, rec: AdapterRecord) -> None:
    store = SQLiteStore(db)
    try:
        await store.put_adapter(rec)
    finally:
        await store.close()


# ## open_run and run_suite


async def test_open_run_gives_the_job_the_adapter_and_a_resumed_run_keeps_it(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    suite = parse_suite(SMALL.read_text())
    run, job = await open_run(store, suite, adapter="x", run_id="r1")
    assert run.adapter == "x" and job.adapter == "x" and job.id == "r1"
    assert (await store.get_run("r1")).adapter == "x"
    again, resumed = await open_run(store, suite, run_id="r1")  # resumed without naming it: the run's own
    assert again.adapter == "x" and resumed.adapter == "x"
    _, plain = await open_run(store, suite, run_id="r2")
    assert plain.adapter is None
    _, owned = await open_run(store, suite, owner="alice", adapter="x", run_id="r3")
    assert owned.adapter == "x" and owned.owner == "alice"
    with pytest.raises(InputError) as e:
        await open_run(store, suite, adapter="no spaces", run_id="r4")
    assert e.value.issues[0].field == "adapter"
    await store.close()


async def test_run_suite_answers_the_cases_with_the_adapter_on_a_booted_engine(tmp_path):
    from shared.cli.evals import run_suite

    db = tmp_path / "jobs.db"
    await put(db, trained(tmp_path))
    store = SQLiteStore(db)
    suite = parse_suite(SMALL.read_text())
    settings = Settings(_env_file=None, sqlite_path=db)
    engine = FakeEngine(lora=True, text=tuned_answers)
    base = await run_suite(store, suite, settings, engine=engine, run_id="base")
    tuned = await run_suite(store, suite, settings, engine=engine, adapter="grades-ca", run_id="tuned",
                            baseline="base")
    assert base.final.outcome is Outcome.completed and tuned.final.outcome is Outcome.completed
    assert (base.scores.passed, tuned.scores.passed) == (0, 3)
    assert tuned.run_id == "tuned" and tuned.regressions is not None and not tuned.regressions.any
    assert [c[0] for c in engine.adapter_calls] == ["grades-ca"] and not engine.closed  # the caller's engine
    outputs = {r.case_id: r.output for r in await store.case_results("tuned")}
    assert outputs == ANSWERS
    # the run's job is done: run again, it is scored from the store and nothing is booted
    again = await run_suite(store, suite, settings, run_id="tuned", boot=None)
    assert again.scores.passed == 3 and engine.started.count("france") == 2
    await store.close()


def test_the_api_and_the_sdk_name_the_adapter(tmp_path):
    from shared.sdk import Client
    from tests.api.test_owners import serve

    path = tmp_path / "small.yaml"
    path.write_text(SMALL.read_text())
    with serve(tmp_path, FakeEngine(lora=True, text=tuned_answers)) as api:
        asyncio.run(put(tmp_path / "jobs.db", trained(tmp_path)))
        with Client("http", base_url=api.url, api_key=api.alice) as client:
            run = client.evals.run(str(path), adapter="grades-ca", id="tuned")
            view = run.wait(timeout=30)
            assert view["adapter"] == "grades-ca" and view["scores"]["passed"] == 3
            assert {c["case_id"]: c["output"] for c in client.evals.cases("tuned")} == ANSWERS
            base = client.evals.run("adapter-small", id="base").wait(timeout=30)
            assert base["adapter"] is None and base["scores"]["passed"] == 0
        with api.as_(api.alice) as alice:
            bad = alice.post("/v1/evals/runs", json={"suite": "adapter-small", "adapter": "not a name"})
            assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "adapter"
            unknown = alice.post("/v1/evals/runs", json={"suite": "adapter-small", "adapter": "nowhere", "id": "u"})
            assert unknown.status_code == 202, unknown.text
        with Client("http", base_url=api.url, api_key=api.alice) as client:
            failed = client.evals.handle("u").wait(timeout=30)
            assert failed["status"] == "failed"  # the job fails before any item runs, naming the adapter


# ## The CLI (in this process, the fake engine instead of vLLM)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """Settings from a temporary SQLite store and nothing else; the settings cache cleared around the test."""
    db = tmp_path / "jobs.db"
    for var, value in {"SQLITE_PATH": str(db), "SUPABASE_URL": "", "DATABASE_URL": "", "COLUMNS": "200",
                       "ADAPTERS_DIR": "", "MODEL_NAME": ""}.items():
        monkeypatch.setenv(var, value)
    get_settings.cache_clear()
    yield db
    get_settings.cache_clear()


def compare_app() -> typer.Typer:
    from shared.cli.train_compare import compare

    app = typer.Typer()
    app.command()(compare)
    return app


def fake_boot(monkeypatch, module: str, engine: FakeEngine) -> list[Settings]:
    """Boot `engine` instead of vLLM in `module`; the settings each boot was given."""
    booted: list[Settings] = []

    async def boot(settings: Settings) -> FakeEngine:
        booted.append(settings)
        return engine

    monkeypatch.setattr(f"{module}.boot_engine", boot)
    return booted


def test_eval_run_with_an_adapter_boots_lora_and_the_adapter_answers(cli_env, tmp_path, monkeypatch):
    from shared.cli import app

    asyncio.run(put(cli_env, trained(tmp_path)))
    engine = FakeEngine(lora=True, text=tuned_answers)
    booted = fake_boot(monkeypatch, "shared.cli.evals", engine)
    r = CliRunner().invoke(app, ["eval", "run", str(SMALL), "--adapter", "grades-ca", "--run-id", "tuned"])
    assert r.exit_code == 0, r.output
    assert "3/3 cases passed" in r.stdout and "adapter grades-ca" in r.stderr
    assert len(booted) == 1 and booted[0].enable_lora is True and booted[0].lora_enabled
    assert engine.closed  # booted by the command: closed by it
    plain = CliRunner().invoke(app, ["eval", "run", str(SMALL), "--run-id", "plain"])
    assert plain.exit_code == 0 and "0/3 cases passed" in plain.stdout
    assert booted[1].enable_lora is None  # no adapter: the settings as they are


def test_train_compare_shows_the_training_figures_and_the_files(cli_env, tmp_path):
    rec = trained(tmp_path)
    asyncio.run(put(cli_env, rec))
    r = CliRunner().invoke(compare_app(), ["grades-ca"])
    assert r.exit_code == 0, r.output
    text = r.stdout
    assert "base vs adapter grades-ca" in text and "base model: SmolLM2-135M-Instruct" in text
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in text.splitlines() if line.count("│") == 5}
    assert rows["held-out perplexity"] == ["12.000", "8.000", "-33.3%"]
    assert rows["training loss (first → last)"] == ["2.5000", "1.2000", "-52.0%"]
    assert rows["held-out loss"][1] == "1.4000" and rows["steps"][1] == "30" and rows["tokens/s"][1] == "850.5"
    job_dir = Path(rec.path).parent
    assert f"adapter: {rec.path}" in text and f"merged model: {job_dir / 'merged'}" in text
    assert f"model card: {job_dir / 'adapter' / 'README.md'}" in text and "training job: train-1" in text


def test_train_compare_json_and_an_adapter_recorded_by_hand(cli_env, tmp_path):
    asyncio.run(put(cli_env, trained(tmp_path)))
    r = CliRunner().invoke(compare_app(), ["grades-ca", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["adapter"] == "grades-ca" and doc["job_id"] == "train-1" and doc["metrics"] == METRICS
    assert doc["training"]["perplexity"] == {"base": 12.0, "adapter": 8.0, "change": pytest.approx(-1 / 3)}
    assert doc["training"]["train_loss"]["change"] == pytest.approx(-0.52)
    assert (doc["training"]["eval_loss"], doc["training"]["steps"], doc["training"]["tokens_per_s"]) == (1.4, 30, 850.5)
    assert doc["merged_dir"].endswith("merged") and doc["model_card"].endswith("README.md")
    assert doc["suites"] == [] and doc["ok"] is True
    # recorded by hand (`llm-jobs adapters add`): no figures, no merged model
    asyncio.run(put(cli_env, AdapterRecord(name="by-hand", path=str(tmp_path / "elsewhere"))))
    hand = CliRunner().invoke(compare_app(), ["by-hand"])
    assert hand.exit_code == 0 and "no training figures" in hand.stdout and "merged model" not in hand.stdout
    doc = json.loads(CliRunner().invoke(compare_app(), ["by-hand", "--json"]).stdout)
    assert doc["metrics"] is None and doc["training"]["perplexity"]["change"] is None and doc["merged_dir"] is None


def test_train_compare_refuses_an_unknown_adapter(cli_env, tmp_path):
    asyncio.run(put(cli_env, trained(tmp_path)))
    r = CliRunner().invoke(compare_app(), ["nope", "--suite", str(SMALL)])
    assert r.exit_code == 2 and "no adapter 'nope'" in r.stderr and "known: grades-ca" in r.stderr


def test_train_compare_runs_each_suite_by_the_base_and_by_the_adapter(cli_env, tmp_path, monkeypatch):
    asyncio.run(put(cli_env, trained(tmp_path)))
    engine = FakeEngine(lora=True, text=tuned_answers)
    booted = fake_boot(monkeypatch, "shared.cli.train_compare", engine)
    r = CliRunner().invoke(compare_app(), ["grades-ca", "--suite", str(SMALL), "--json"])
    assert r.exit_code == 0, r.output
    assert len(booted) == 1 and booted[0].lora_enabled and engine.closed  # one engine, LoRA on, closed after
    doc = json.loads(r.stdout)
    (s,) = doc["suites"]
    assert s["suite"] == "adapter-small" and s["cases"] == 3 and s["file"] == str(SMALL)
    assert (s["base"]["outcome"], s["adapter"]["outcome"]) == ("completed", "completed") and doc["ok"]
    assert (s["base"]["scores"]["passed"], s["adapter"]["scores"]["passed"]) == (0, 3)
    assert s["diff"]["pass_rate"] == 1.0 and s["diff"]["metrics"]["icontains"] == {"base": 0.0, "adapter": 1.0,
                                                                                   "diff": 1.0}
    assert s["fixed"] == ["france", "italy", "water"] and s["broken"] == []
    assert s["adapter"]["regressions"] == {"cases": [], "metrics": []}  # against the base's run

    async def runs():
        store = SQLiteStore(cli_env)
        try:
            return (await store.get_run(s["base"]["run_id"]), await store.get_run(s["adapter"]["run_id"]),
                    await all_scores(store, s["adapter"]["run_id"]))
        finally:
            await store.close()

    base_run, tuned_run, scores = asyncio.run(runs())
    assert base_run.adapter is None and tuned_run.adapter == "grades-ca" and tuned_run.baseline == base_run.id
    assert all(c.passed for c in scores)
    # the table: side by side, with the difference
    table = CliRunner().invoke(compare_app(), ["grades-ca", "--suite", str(SMALL)])
    assert table.exit_code == 0, table.output
    assert "suite adapter-small: base vs adapter (3 case(s))" in table.stdout
    assert "0.0% (0/3)" in table.stdout and "100.0% (3/3)" in table.stdout and "+100.0 pp" in table.stdout
    assert "pass only with the adapter: france, italy, water" in table.stdout


def test_train_compare_exits_1_when_a_run_fails(cli_env, tmp_path, monkeypatch):
    asyncio.run(put(cli_env, trained(tmp_path)))
    fake_boot(monkeypatch, "shared.cli.train_compare",
              FakeEngine(lora=True, text=tuned_answers, refuse_adapters={"grades-ca": "rank too high"}))
    r = CliRunner().invoke(compare_app(), ["grades-ca", "--suite", str(SMALL), "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    (s,) = doc["suites"]
    assert s["base"]["outcome"] == "completed" and s["adapter"]["outcome"] == "failed" and doc["ok"] is False
    assert "rank too high" in r.stderr


# ## The real engine


@pytest.mark.integration
def test_train_compare_with_a_real_adapter_on_the_cpu_engine(tmp_path):
    """A peft adapter of the embedded model (B filled with noise: it surely changes greedy answers), compared
    with the base by `train compare --suite` in a subprocess that boots vLLM once with LoRA on."""
    from handler.engine.default_model import ensure_default_model
    from shared.contracts.adapters import read_adapter
    from tests.integration.conftest import TEST_MAX_MODEL_LEN, engine_settings
    from tests.integration.test_lora import make_adapter

    model_dir = ensure_default_model(engine_settings().cache_dir)
    path = make_adapter(model_dir, tmp_path / "training" / "job" / "adapter", random_b=True)
    db = tmp_path / "jobs.db"
    asyncio.run(put(db, AdapterRecord(name="noisy", base_model=read_adapter(path).base_model, path=str(path),
                                      config={"adapter": "noisy", "lora": {"r": 8}}, metrics=METRICS,
                                      job_id="train-1")))
    env = {**os.environ, "SQLITE_PATH": str(db), "SUPABASE_URL": "", "DATABASE_URL": "", "ADAPTERS_DIR": "",
           "MODEL_NAME": "", "MAX_MODEL_LEN": str(TEST_MAX_MODEL_LEN), "COLUMNS": "200"}
    cmd = [sys.executable, "-c", "import typer; from shared.cli.train_compare import compare; typer.run(compare)",
           "noisy", "--suite", str(SMALL), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)
    assert doc["training"]["perplexity"]["change"] == pytest.approx(-1 / 3)
    (s,) = doc["suites"]
    assert (s["base"]["outcome"], s["adapter"]["outcome"]) == ("completed", "completed") and doc["ok"]
    assert set(s["diff"]["metrics"]) >= {"icontains", "rouge_l", "latency_ms"}

    async def outputs(run_id: str) -> dict[str, str | None]:
        store = SQLiteStore(db)
        try:
            return {r.case_id: r.output for r in await store.case_results(run_id)}
        finally:
            await store.close()

    base, tuned = asyncio.run(outputs(s["base"]["run_id"])), asyncio.run(outputs(s["adapter"]["run_id"]))
    assert set(base) == set(tuned) == set(ANSWERS)
    assert all(base.values()) and all(tuned.values())
    assert base != tuned  # the adapter answered: greedy decoding with its noise gives other words
    print(f"\nbase: {base}\nadapter: {tuned}\npass rate {s['base']['scores']['pass_rate']:.0%} -> "
          f"{s['adapter']['scores']['pass_rate']:.0%}")
