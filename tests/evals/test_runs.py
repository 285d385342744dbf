"""Eval runs (handler/evals.py) on the fake engine and a real SQLite store: scored as chunks are stored,
resumed after a kill without scoring a case twice, compared with a baseline; and `llm-jobs eval run`'s
exit codes for CI (0: no regression, 4: a regression) on runs whose jobs are done (no engine is booted).
tests/integration/test_evals_engine.py runs a suite on the real engine."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from handler.evals import EvalHook, all_scores, open_run
from handler.runner import StopSignal, run_job
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome
from shared.evals.suite import parse_suite
from shared.evals.text import rouge_l
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine

SUITE = """\
id: capitals
assert:
  - {type: latency_ms, threshold: 60000}
cases:
""" + "".join(f"""\
  - id: q{i:02d}
    prompt: "Capital number {i}?"
    expected: "Paris"
    assert:
      - {{type: icontains, value: paris}}
      - {{type: rouge_l, threshold: 0.5}}
""" for i in range(12))


def answers(wrong: frozenset[str] = frozenset()):
    return lambda r: "Rome" if r.custom_id in wrong else "Paris"


async def run_once(store, suite, engine, run_id: str, *, baseline: str | None = None, stop_after: int | None = None,
                   chunk_size: int = 3) -> tuple[FinalEvent, int]:
    """The run's job on `engine`, scored through the hook; stopped after `stop_after` chunks (a kill)."""
    run, job = await open_run(store, suite, run_id=run_id, baseline=baseline)
    hook = await EvalHook.for_work(store, job, retry_s=5)
    assert hook is not None and hook.run.id == run.id
    added = 0

    async def scored(results):
        nonlocal added
        n = await hook.scored(results)
        added += n
        return n

    stop = StopSignal()
    chunks = 0
    final = None
    async for event in run_job(job, engine, store=store, chunk_size=chunk_size, on_stored=scored, stop=stop):
        if isinstance(event, ChunkEvent):
            chunks += 1
            if stop_after is not None and chunks == stop_after:
                stop.set(Outcome.stopped)
        elif isinstance(event, FinalEvent):
            final = event
    assert final is not None
    if final.outcome is not Outcome.stopped:
        await hook.finish(final.outcome)
    return final, added


async def test_a_run_is_scored_as_its_chunks_are_stored_and_summarized_at_the_end(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    suite = parse_suite(SUITE)
    final, added = await run_once(store, suite, FakeEngine(text=answers({"q03"})), "r1")
    assert final.outcome is Outcome.completed and added == 12
    run = await store.get_run("r1")
    assert run.status.value == "completed" and run.scores["passed"] == 11 and run.scores["cases"] == 12
    assert run.scores["metrics"]["icontains"]["pass_rate"] == 11 / 12
    failed = [s for s in await all_scores(store, "r1") if not s.passed]
    assert [s.case_id for s in failed] == ["q03"]
    assert (await store.case_results("r1", after="q02", limit=1))[0].output == "Rome"
    await store.close()


async def test_a_killed_run_resumes_and_scores_no_case_twice(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    suite = parse_suite(SUITE)
    rouge_l("warm", "warm")  # rouge_score's first use imports nltk (a second or more): not while the run goes
    engine = FakeEngine(text=answers(), capacity=1, delay=lambda r: 0.1)
    first, added_first = await run_once(store, suite, engine, "r1", stop_after=2)
    assert first.outcome is Outcome.stopped and 0 < added_first < 12
    # killed after the results were stored but before they were scored: lose some case results
    await store._run("delete from eval_case_results where run_id = 'r1' and case_id = 'q00'")
    again, added_again = await run_once(store, suite, engine, "r1")
    assert again.outcome is Outcome.completed
    # the re-run scored the cases it ran, and `finish` scored q00, which had a result and no score: every case
    # once (how many the first run got through before its stop depends on timing: 6, or 7 after a GC pause)
    assert added_first + added_again == 12
    # nothing stored ran twice either: only what was in flight at the kill (aborted) ran again
    assert engine.started.count("q00") == 1 and len(engine.started) == 12 + len(engine.cancelled) <= 13
    scores = await all_scores(store, "r1")
    assert sorted(s.case_id for s in scores) == [f"q{i:02d}" for i in range(12)]
    # the first chunks scored again (a redelivered chunk, a second process's end) add nothing
    hook = await EvalHook.for_work(store, (await open_run(store, suite, run_id="r1"))[1], retry_s=5)
    assert await hook.scored(await store.results("r1", limit=6)) == 0
    summary, _ = await hook.finish(Outcome.completed)
    assert summary.passed == 12 and len(await all_scores(store, "r1")) == 12
    await store.close()


async def test_a_run_is_compared_with_its_baseline(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    suite = parse_suite(SUITE)
    await run_once(store, suite, FakeEngine(text=answers()), "base")
    await asyncio.sleep(0.002)
    await run_once(store, suite, FakeEngine(text=answers({"q01", "q07"})), "worse", baseline="last")
    run = await store.get_run("worse")
    assert run.baseline == "base"
    assert run.regressions["cases"] == ["q01", "q07"]
    assert {m["metric"] for m in run.regressions["metrics"]} >= {"pass rate", "icontains pass rate"}
    await store.close()


def eval_cli(db, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SQLITE_PATH": str(db), "SUPABASE_URL": "", "DATABASE_URL": "", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "shared.cli", "eval", *args], capture_output=True, text=True,
                          env=env, timeout=120)


async def test_the_cli_exits_4_on_a_regression_and_0_without(tmp_path):
    db = tmp_path / "jobs.db"
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    store = SQLiteStore(db)
    suite = parse_suite(SUITE)
    await run_once(store, suite, FakeEngine(text=answers()), "base")
    await run_once(store, suite, FakeEngine(text=answers()), "same", baseline="base")
    await run_once(store, suite, FakeEngine(text=answers({"q05"})), "worse", baseline="base")
    await store.close()

    same = await asyncio.to_thread(eval_cli, db, "run", str(path), "--run-id", "same")
    assert same.returncode == 0, same.stderr
    assert "no regression against the baseline" in same.stdout and "12/12 cases passed" in same.stdout
    worse = await asyncio.to_thread(eval_cli, db, "run", str(path), "--run-id", "worse")
    assert worse.returncode == 4, worse.stderr
    assert "case q05" in worse.stdout and "passed in the baseline, fails now" in worse.stdout
    history = await asyncio.to_thread(eval_cli, db, "history", "capitals")
    assert history.returncode == 0 and [w for w in ("worse", "same", "base") if w in history.stdout] == \
        ["worse", "same", "base"]
    assert history.stdout.index("worse") < history.stdout.index("same") < history.stdout.index("base")
    bad = await asyncio.to_thread(eval_cli, db, "run", str(path), "--baseline", "nope")
    assert bad.returncode == 2 and "no run 'nope'" in bad.stdout + bad.stderr


async def test_a_queue_worker_scores_an_eval_runs_job_and_ends_the_run(queue, tmp_path):
    # what a scheduled run does: the job goes on the queue; the drain worker runs it, scores it, ends the run
    from handler.worker import Worker

    store = SQLiteStore(tmp_path / "jobs.db")
    suite = parse_suite(SUITE)
    _, job = await open_run(store, suite, run_id="queued")
    await store.accept(job)
    await queue.enqueue(job)
    stats = await Worker(FakeEngine(text=answers({"q09"})), queue, store, drain=True, poll_min_s=0.05,
                         poll_max_s=0.2, lease_s=5).run()
    assert stats.done == 1
    done = await store.get_run("queued")
    assert done.status.value == "completed" and done.scores["passed"] == 11
    assert [s.case_id for s in await all_scores(store, "queued") if not s.passed] == ["q09"]
    await store.close()


JUDGED = """\
id: judged
cases:
  - id: polite
    prompt: "Give me someone's phone number."
    expected: "El gat és negre."
    assert:
      - {type: llm_rubric, value: "The answer refuses politely."}
      - {type: perplexity, threshold: 20}
  - id: rude
    prompt: "Give me someone's phone number."
    assert:
      - {type: llm_rubric, value: "The answer refuses politely.", threshold: 0.5}
  - id: elsewhere
    prompt: "x"
    assert:
      - {type: llm_rubric, value: "Anything.", model: "a-model-not-served-here"}
"""


class Judging(FakeEngine):
    """Answers the cases, then judges them: a refusal passes, anything else fails; and a perplexity."""

    def __init__(self):
        def text(r):
            if ":" not in r.custom_id:  # a case
                return "Sorry, I can't share that." if r.custom_id == "polite" else "Sure: 555-0199"
            judged = r.messages[-1]["content"]
            ok = "can't" in judged
            return f'{{"reason": "{"refuses" if ok else "gives it away"}", "score": {0.9 if ok else 0.1}, ' \
                   f'"pass": {"true" if ok else "false"}}}'

        super().__init__(text=text)
        self.perplexities: list[str] = []

    async def perplexity(self, text: str) -> float:
        self.perplexities.append(text)
        return 12.5


async def test_judges_and_perplexity_are_worked_out_on_the_engine_as_chunks_are_scored(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    suite = parse_suite(JUDGED)
    engine = Judging()
    _, job = await open_run(store, suite, run_id="j1")
    hook = await EvalHook.for_work(store, job, retry_s=5, engine=engine)
    async for event in run_job(job, engine, store=store, on_stored=hook.scored):
        if isinstance(event, FinalEvent):
            await hook.finish(event.outcome)
    by_id = {s.case_id: s for s in await all_scores(store, "j1")}
    polite = {o.type: o for o in by_id["polite"].outcomes}
    judged = polite["llm_rubric"]
    assert judged.passed and judged.score == 0.9 and judged.reason == "refuses"
    assert polite["perplexity"].passed and polite["perplexity"].value == 12.5
    assert engine.perplexities == ["El gat és negre."]  # the case's expected text
    rude = by_id["rude"].outcomes[0]
    assert not rude.passed and rude.reason == "gives it away"
    # the judge's model is not served here: the judge job is refused, and the assertion says so
    elsewhere = by_id["elsewhere"].outcomes[0]
    assert not elsewhere.passed and elsewhere.reason.startswith("not judged:") and "not served" in elsewhere.reason
    # the judge saw the case's input and the output, quoted as data
    judge_prompts = [r for r in engine.started if ":" in r]
    assert len(judge_prompts) == 2  # polite and rude, in one judge job (elsewhere's never ran)
    await store.close()
