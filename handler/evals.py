"""An eval run, where its job runs: scoring as chunks are stored, and the run's end (issue 14).

An eval run is an ordinary job (its id is the run's; `metadata.eval_run` names the run), so it
streams, shards and resumes like any other. The process that runs it scores each chunk once it is
stored (`EvalHook.scored`, off the event loop) and writes the case results, which the store keeps
once per (run, case). When the job ends, `EvalHook.finish` scores whatever was stored but not
scored (a run killed between the two writes), summarizes the run from its stored case results,
compares it with its baseline and records it. Both steps can be repeated: nothing is scored twice,
and `finish` writes the same summary again. A scoring failure never fails the job: it is logged,
and `finish` makes up for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from handler.runner import run_job
from shared.contracts.errors import InputError, Issue, ItemFailure, LLMJobsError, issues_of
from shared.contracts.events import ChunkEvent, ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import ID_PATTERN, Job, JobStatus, Result
from shared.contracts.owners import scoped_id
from shared.contracts.shards import ShardRef
from shared.evals.checks import Facts, Verdict, reference
from shared.evals.judge import JUDGE_FORMAT, judge_messages, verdict_of
from shared.evals.records import CaseResult, RunRecord, SuiteRecord, new_run_id
from shared.evals.regress import Regressions, compare
from shared.evals.scoring import CaseScore, RunScores, score_cases, summarize
from shared.evals.suite import Case, Suite
from shared.stores.base import Store, retrying

if TYPE_CHECKING:
    from handler.engine.base import Engine

log = logging.getLogger("llm_jobs.evals")

#: the job metadata key that names the eval run a job belongs to
RUN_KEY = "eval_run"
#: results (and case results) read a page at a time
PAGE = 1000
#: the most a judge writes (its reason, score and verdict)
JUDGE_MAX_TOKENS = 300


def case_result(run_id: str, score: CaseScore, result: Result) -> CaseResult:
    return CaseResult(run_id=run_id, case_id=score.case_id, passed=score.passed, score=score.score,
                      outcomes=[o.model_dump(mode="json") for o in score.outcomes], label=score.label,
                      expected_label=score.expected_label, output=result.text, error=score.error)


def stored_score(r: CaseResult) -> CaseScore:
    return CaseScore.model_validate({"case_id": r.case_id, "passed": r.passed, "score": r.score,
                                     "outcomes": r.outcomes, "label": r.label, "expected_label": r.expected_label,
                                     "error": r.error})


async def load_suite(store: Store, suite_id: str, version: str | None) -> Suite | None:
    found = await store.suite_version(suite_id, version)
    if found is None:
        return None
    options, cases = found
    # checked when it was stored (shared/evals/suite.py parse_suite): read back as it is
    return await asyncio.to_thread(Suite.model_validate, {**options, "cases": cases})


class EvalHook:
    def __init__(self, store: Store, run: RunRecord, suite: Suite, *, retry_s: float, engine: Engine | None = None):
        """`engine` runs the judges of `llm_rubric` and the `perplexity` assertions (without one, they fail
        as not judged)."""
        self.store, self.run, self.suite, self.retry_s, self.engine = store, run, suite, retry_s, engine
        self.cases: dict[str, Case] = {c.id: c for c in suite.cases}

    @classmethod
    async def for_work(cls, store: Store | None, work: Job | ShardRef, *, retry_s: float,
                       engine: Engine | None = None) -> EvalHook | None:
        """The hook of the eval run `work` belongs to, or None for an ordinary job."""
        job = work.options_job() if isinstance(work, ShardRef) else work
        run_id = job.metadata.get(RUN_KEY)
        if store is None or not isinstance(run_id, str):
            return None
        try:
            run = await retrying(lambda: store.get_run(run_id), within_s=retry_s)
            suite = None if run is None else await load_suite(store, run.suite_id, run.version)
        except LLMJobsError as e:
            log.warning("job %s: eval run %s could not be loaded, its results are scored at its end: %s",
                        job.id, run_id, e)
            return None
        if run is None or suite is None:
            log.warning("job %s names eval run %s, which the store does not have", job.id, run_id)
            return None
        return cls(store, run, suite, retry_s=retry_s, engine=engine)

    def _score(self, results: Sequence[Result], facts: dict[str, Facts]) -> list[CaseResult]:
        known = [(self.cases[r.custom_id], r, facts.get(r.custom_id)) for r in results if r.custom_id in self.cases]
        return [case_result(self.run.id, score, r) for score, (_, r, _) in
                zip(score_cases(self.suite, known), known, strict=True)]

    async def scored(self, results: Sequence[Result]) -> int:
        """Score a stored chunk's results and keep them; how many were new. Never raises."""
        try:
            facts = await self._facts(results) if self.engine is not None else {}
            rows = await asyncio.to_thread(self._score, results, facts)
            return await retrying(lambda: self.store.write_case_results(rows), within_s=self.retry_s)
        except Exception:  # scoring must not fail the job: `finish` scores what is missing
            log.exception("eval run %s: a chunk could not be scored", self.run.id)
            return 0

    async def _facts(self, results: Sequence[Result]) -> dict[str, Facts]:
        """What the engine says of these results: the judges' verdicts and the perplexities their cases ask
        for, by custom_id."""
        judged: dict[str | None, list[tuple[str, int, list[dict[str, str]]]]] = {}
        texts: list[tuple[str, int, str]] = []
        for r in results:
            case = self.cases.get(r.custom_id)
            if case is None or r.text is None:
                continue
            for i, a in enumerate(self.suite.assertions(case)):
                if a.type == "llm_rubric":
                    doc = case.model_dump(mode="json", by_alias=True, exclude_none=True)
                    judged.setdefault(a.model, []).append((r.custom_id, i, judge_messages(str(a.value), doc,
                                                                                          r.text)))
                elif a.type == "perplexity" and isinstance(text := reference(a, case.expected), str):
                    texts.append((r.custom_id, i, text))
        verdicts: dict[tuple[str, int], Verdict] = {}
        for model, items in judged.items():
            verdicts |= await self._judge(model, items)
        ppl = await self._perplexities(texts)
        out: dict[str, Facts] = {}
        for cid in {cid for cid, _ in verdicts} | {cid for cid, _ in ppl}:
            out[cid] = Facts(verdicts={i: v for (c, i), v in verdicts.items() if c == cid},
                             perplexity={i: p for (c, i), p in ppl.items() if c == cid})
        return out

    async def _judge(self, model: str | None, items: list[tuple[str, int, list[dict[str, str]]]]
                     ) -> dict[tuple[str, int], Verdict]:
        """One judge job (an ordinary job, run here on the engine, kept nowhere) over `items`."""
        assert self.engine is not None
        job = Job.model_validate({
            "id": f"{self.run.id[:80]}-judge-{secrets.token_hex(4)}", "model": model, "response_format": JUDGE_FORMAT,
            "sampling": {"temperature": 0, "max_tokens": JUDGE_MAX_TOKENS},
            "items": [{"custom_id": f"{i}:{cid}", "messages": messages} for cid, i, messages in items]})
        out: dict[tuple[str, int], Verdict] = {}
        why = "the judge gave no verdict"
        async for event in run_job(job, self.engine, chunk_size=len(items), on_close=None):
            if isinstance(event, ChunkEvent):
                for r in event.results:
                    i, _, cid = r.custom_id.partition(":")
                    verdict = verdict_of(r)
                    out[(cid, int(i))] = verdict or Verdict(
                        passed=False, score=0.0, reason=f"not judged: {r.error.message if r.error else why}")
            elif isinstance(event, ErrorEvent):  # the judge's model is not served here, say
                why = event.error
        for cid, i, _ in items:
            out.setdefault((cid, i), Verdict(passed=False, score=0.0, reason=f"not judged: {why}"))
        return out

    async def _perplexities(self, texts: list[tuple[str, int, str]]) -> dict[tuple[str, int], float]:
        measure = getattr(self.engine, "perplexity", None)
        if measure is None or not texts:
            return {}
        gate = asyncio.Semaphore(max(1, getattr(self.engine, "capacity", 8)))

        async def one(text: str) -> float | None:
            async with gate:
                try:
                    return await measure(text)
                except ItemFailure as e:
                    log.warning("eval run %s: no perplexity for a text: %s", self.run.id, e)
                    return None

        found = await asyncio.gather(*(one(text) for _, _, text in texts))
        return {(cid, i): p for (cid, i, _), p in zip(texts, found, strict=True) if p is not None}

    async def begin(self) -> None:
        if self.run.status is JobStatus.queued:
            await retrying(lambda: self.store.set_run_status(self.run.id, JobStatus.running), within_s=self.retry_s)

    async def finish(self, outcome: Outcome) -> tuple[RunScores, Regressions | None]:
        """Score what is left, summarize, compare with the baseline, and record the run's end (`outcome`:
        the job's, completed, failed or cancelled)."""
        job_id = self.run.job_id
        after: str | None = None
        while page := await retrying(lambda at=after: self.store.results(job_id, after=at, limit=PAGE),
                                     within_s=self.retry_s):
            done = await self.store.scored_ids(self.run.id, [r.custom_id for r in page])
            await self.scored([r for r in page if r.custom_id not in done])
            after = page[-1].custom_id
        scores = await all_scores(self.store, self.run.id)
        summary = await asyncio.to_thread(summarize, self.suite, scores)
        regressions = await self._compare(summary, scores)
        status = outcome.status
        await retrying(lambda: self.store.finish_run(self.run.id, status, summary.model_dump(mode="json"),
                                                     regressions and regressions.model_dump(mode="json")),
                       within_s=self.retry_s)
        return summary, regressions

    async def _compare(self, summary: RunScores, scores: list[CaseScore]) -> Regressions | None:
        if not self.run.baseline:
            return None
        base = await self.store.get_run(self.run.baseline)
        if base is None or base.scores is None:
            return None
        base_cases = {s.case_id: s.passed for s in await all_scores(self.store, base.id)}
        return compare(summary, {s.case_id: s.passed for s in scores}, RunScores.model_validate(base.scores),
                       base_cases, self.suite.regression.max_drop)


async def all_scores(store: Store, run_id: str) -> list[CaseScore]:
    out: list[CaseScore] = []
    after: str | None = None
    while page := await store.case_results(run_id, after=after, limit=PAGE):
        out += [stored_score(r) for r in page]
        after = page[-1].case_id
    return out



async def report_inputs(store: Store, run_id: str, history: int
                        ) -> tuple[RunRecord, list[RunRecord], list[CaseResult], Suite | None] | None:
    """What a run's report shows (shared/evals/report.py): the run, its suite's `history - 1` runs before it
    oldest first, its case results, and the suite version it ran; None when the store has no such run."""
    run = await store.get_run(run_id)
    if run is None:
        return None
    earlier = await store.list_runs(run.suite_id, limit=history - 1, before=run.id) if history > 1 else []
    results: list[CaseResult] = []
    after: str | None = None
    while page := await store.case_results(run.id, after=after, limit=PAGE):
        results += page
        after = page[-1].case_id
    try:
        suite = await load_suite(store, run.suite_id, run.version)
    except ValueError as e:  # a version stored by another release that no longer reads: report without it
        log.warning("eval run %s: its suite version %s could not be read (%s): no grading scale", run_id,
                    run.version, e)
        suite = None
    return run, list(reversed(earlier)), results, suite


async def ended(hook: EvalHook | None, final: FinalEvent | None) -> None:
    """The run's end, when `final` is its job's (a shard that did not end the job passes None). Never raises:
    the job has ended whatever happens here, and a later `finish` (the CLI, the API) can record it."""
    if hook is None or final is None or final.outcome is Outcome.stopped:
        return
    try:
        await hook.finish(final.outcome)
    except Exception:
        log.exception("eval run %s: its end could not be recorded", hook.run.id)


def suite_parts(suite: Suite) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the suite without its cases, its cases), as the store keeps them."""
    doc = suite.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {k: v for k, v in doc.items() if k != "cases"}, doc["cases"]


async def keep_suite(store: Store, suite: Suite, owner: str | None) -> tuple[SuiteRecord, bool]:
    """Store the suite's version (once) under the owner's id for it; True when that version is new."""
    options, cases = await asyncio.to_thread(suite_parts, suite)
    rec = SuiteRecord(id=scoped_id(owner, suite.id), name=suite.id, owner=owner, version=suite.version(),
                      cases=len(cases))
    return rec, await store.put_suite(rec, options, cases)


async def last_run(store: Store, suite_id: str, *, other_than: str | None = None) -> RunRecord | None:
    """The suite's newest run that finished with scores (the baseline `last`)."""
    before: str | None = None
    for _ in range(20):  # 20 pages of 50: a baseline further back than that is not "last"
        page = await store.list_runs(suite_id, limit=50, before=before)
        for run in page:
            if run.id != other_than and run.status is JobStatus.completed and run.scores is not None:
                return run
        if len(page) < 50:
            return None
        before = page[-1].id
    return None


async def open_run(store: Store, suite: Suite, *, owner: str | None = None, model: str | None = None,
                   adapter: str | None = None, baseline: str | None = None, run_id: str | None = None,
                   git_rev: str | None = None, schedule_id: str | None = None, slot: datetime | None = None,
                   ) -> tuple[RunRecord, Job]:
    """The run (made, or found again: the same `run_id` resumes it) and the job that runs its cases.

    `baseline`: a run id of the same suite, `last` (its newest finished run), or None. `adapter`: the LoRA
    adapter that answers the cases (the job's `adapter`; the engine loads it before any item runs). The run's
    id is the job's, scoped by owner like a job id.
    """
    if adapter is not None and not re.fullmatch(ID_PATTERN, adapter):
        raise InputError([Issue(f"{adapter[:40]!r} is not an adapter name: 1 to 128 letters, digits and . _ : -, "
                                "starting with a letter or digit", field="adapter")])
    rec, _ = await keep_suite(store, suite, owner)
    stored_id = scoped_id(owner, run_id or new_run_id(suite.id))
    run = await store.get_run(stored_id)
    if run is None:
        base = None
        if baseline == "last":
            found = await last_run(store, rec.id)
            base = found.id if found else None
        elif baseline:
            base = scoped_id(owner, baseline)
            found = await store.get_run(base)
            if found is None or found.suite_id != rec.id:
                raise InputError([Issue(f"no run '{baseline}' of suite '{suite.id}' to compare with",
                                        field="baseline")])
        run = RunRecord(id=stored_id, owner=owner, suite_id=rec.id, version=rec.version, job_id=stored_id,
                        model=model or suite.model, adapter=adapter, git_rev=git_rev, baseline=base,
                        schedule_id=schedule_id, slot=slot,
                        settings={"sampling": suite.sampling.model_dump(exclude_none=True)})
        await store.create_run(run)
        run = await store.get_run(stored_id) or run
    elif run.suite_id != rec.id:
        raise InputError([Issue(f"run '{run_id}' belongs to another suite", field="run_id")])
    suite_at = suite if run.version == rec.version else await load_suite(store, run.suite_id, run.version)
    if suite_at is None:
        raise InputError([Issue(f"run '{run_id}' ran a version of the suite the store no longer has",
                                field="run_id")])
    meta = {RUN_KEY: run.id, "suite": suite.id, "suite_version": run.version}
    try:  # a job of every case: off the event loop
        job = await asyncio.to_thread(suite_at.job, run.job_id, model=run.model, metadata=meta)
    except ValidationError as e:  # the model named for the run, say
        raise InputError(issues_of(e)) from None
    # the run's adapter answers its cases (a resumed run keeps the one it was made with)
    return run, job.model_copy(update={"owner": owner, "adapter": run.adapter})
