"""Evaluation suites: scoring throughput, and an eval run's throughput against the same job unscored.

    python -m benchmarks.evals [--cases 2000] [--results 10000] [--chunk 10] [--rounds 3] [--latency-s 0.05]
                               [--capacity 32]

The suite is built in code as YAML and read with `parse_suite`: `--cases` Catalan grading cases (an
essay in `fields`, `expected: {nota, feedback}`), the suite's `is_json` and `json_schema` (its
response_format's schema) on every case, then each case's own `icontains`, `regex`, `not_icontains`,
and `rouge_l` and `chrf` on `$.feedback` against `expected.feedback`. The outputs are JSON texts
`{"nota", "feedback"}` with a Catalan feedback of 20-40 words, drawn from a few templates with a
seeded RNG; some are not JSON, some miss the schema, some echo a phone number.

1. Scoring: `--results` results (the cases in turn) through `score_cases`, `--chunk` at a time (default:
   a job's chunk size), as the eval hook scores each stored chunk, with the rules only, with the rules +
   ROUGE-L, and with the rules + ROUGE-L + chrF (a chunk's chrF counted in one pass); then the last
   through `score_case`, one result at a time (the same scores), and `summarize` over the scores.
   Single process, single thread; warmed up first (rouge_score imports nltk on its first use). Target:
   at least 5,000 results/s with ROUGE-L and chrF.
2. A run: the same `--cases` items on the fake engine (testkit/fake_gpu.py: `--capacity` requests at
   once, `--latency-s` each) with a SQLite store, chunk_size 10, run twice per round in one process:
   the plain job (`run_job` with the store), and the eval run (`open_run`, `EvalHook.for_work`,
   `run_job(..., on_stored=hook.scored)`, then `hook.finish`), the order alternating by round. The
   ratio is the eval run's items/s over the plain job's while the job runs (median over rounds;
   target >= 0.95); `finish` (score what is left, summarize, record) is timed apart.

Every figure is a CPU figure on this machine; the ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from handler.engine.base import Completion
from handler.evals import EvalHook, open_run
from handler.runner import run_job
from shared.contracts.events import FinalEvent
from shared.contracts.models import Result
from shared.contracts.prepare import Request
from shared.contracts.settings import DEFAULTS
from shared.evals.checks import OVERLAP
from shared.evals.scoring import score_case, score_cases, summarize
from shared.evals.suite import Suite, parse_suite
from shared.stores.sqlite import SQLiteStore
from testkit.fake_gpu import FakeGpu

# (sentence, a word it is known by): a feedback is a few of these
SENTENCES = [
    ("L'estructura del text és clara i ben ordenada.", "estructura"),
    ("Cal revisar l'ortografia, sobretot els accents oberts i tancats.", "ortografia"),
    ("Els arguments són convincents, però falten exemples concrets.", "arguments"),
    ("La conclusió resumeix bé les idees principals de la redacció.", "conclusió"),
    ("Hi ha algunes repeticions que fan la lectura una mica feixuga.", "repeticions"),
    ("El vocabulari és ric i adequat al tema del barri.", "vocabulari"),
    ("Convé fer servir més connectors entre els paràgrafs.", "connectors"),
    ("La introducció presenta el tema amb precisió i interès.", "introducció"),
    ("Alguns verbs no concorden amb el subjecte de la frase.", "verbs"),
    ("Es nota un bon domini de la puntuació i de les majúscules.", "puntuació"),
    ("Caldria explicar millor per què l'àvia és tan important en el relat.", "àvia"),
    ("La descripció del col·legi és viva i plena de detalls.", "col·legi"),
    ("Les frases llargues s'haurien de dividir per guanyar claredat.", "frases"),
]
TOPICS = ["el meu barri", "la meva àvia", "el col·legi", "un dia de pluja", "la festa major", "el mercat"]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["nota", "feedback"],
          "properties": {"nota": {"type": "integer", "minimum": 0, "maximum": 10},
                         "feedback": {"type": "string", "minLength": 10}}}
PHONE = "555-0199"


def feedback(rng: random.Random, start: list[int] | None = None) -> tuple[str, list[int]]:
    """20-40 words of sentences (from `start`'s, then random ones); the sentences' indexes."""
    picked = list(start or [])
    while sum(len(SENTENCES[i][0].split()) for i in picked) < 20:
        picked.append(rng.choice([i for i in range(len(SENTENCES)) if i not in picked]))
    while sum(len(SENTENCES[i][0].split()) for i in picked) > 40:
        picked.pop(0)
    return " ".join(SENTENCES[i][0] for i in picked), picked


def build_suite(n: int, rng: random.Random) -> str:
    """The suite's YAML text: n cases, each with an expected {nota, feedback} and its own assertions."""
    fmt = {"type": "json_schema", "json_schema": {"name": "nota", "schema": SCHEMA}}
    lines = ["id: grading-ca", 'template: "Avalua aquesta redacció: {{ essay }}"',
             "sampling: {temperature: 0.1, top_p: 0.95, max_tokens: 200}", f"response_format: {json.dumps(fmt)}",
             "assert:", "  - {type: is_json}", "  - {type: json_schema}",
             "grading: {output: $.nota, labels: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}", "cases:"]
    for i in range(n):
        text, picked = feedback(rng)
        expected = {"nota": rng.randint(0, 10), "feedback": text}
        essay = f"Escric sobre {rng.choice(TOPICS)}. És un lloc on passen coses cada dia (redacció {i})."
        lines += [f"  - id: essay-{i:05d}", f"    fields: {{essay: {json.dumps(essay, ensure_ascii=False)}}}",
                  f"    expected: {json.dumps(expected, ensure_ascii=False)}", "    assert:",
                  f"      - {{type: icontains, value: {json.dumps(SENTENCES[picked[0]][1], ensure_ascii=False)}}}",
                  '      - {type: regex, value: "\\"nota\\":\\\\s*(10|[0-9])\\\\b"}',
                  f'      - {{type: not_icontains, value: "{PHONE}"}}',
                  "      - {type: rouge_l, path: $.feedback, threshold: 0.2, weight: 2}",
                  "      - {type: chrf, path: $.feedback, threshold: 0.3}"]
    return "\n".join(lines) + "\n"


def answer(rng: random.Random, expected: dict) -> str:
    """A model's output: mostly valid, near the expected feedback or not; some not JSON or off the schema."""
    exp_idx = [i for i, (s, _) in enumerate(SENTENCES) if s in expected["feedback"]]
    start = rng.sample(exp_idx, k=rng.randint(1, len(exp_idx))) if rng.random() < 0.6 else []
    text, _ = feedback(rng, start)
    nota = max(0, min(10, expected["nota"] + rng.choice([-2, -1, 0, 0, 0, 1, 2])))
    roll = rng.random()
    if roll < 0.04:
        return f"La redacció mereix un {nota}. {text}"  # prose: not JSON
    if roll < 0.06:
        return json.dumps({"nota": nota, "feedback": text}, ensure_ascii=False)[:-15]  # cut short
    if roll < 0.09:
        return json.dumps({"nota": str(nota), "feedback": text}, ensure_ascii=False)  # off the schema
    if roll < 0.12:
        text += f" Truca'm al {PHONE} si tens dubtes."
    return json.dumps({"nota": nota, "feedback": text}, ensure_ascii=False)


def without(suite: Suite, dropped: set[str]) -> Suite:
    """The suite with the `dropped` assertion types taken out of its cases."""
    return suite.model_copy(update={"cases": [c.model_copy(update={"assert_": [
        a for a in c.assert_ if a.type not in dropped]}) for c in suite.cases]})


def bench_scoring(suite: Suite, answers: dict[str, str], n: int, chunk: int) -> dict[str, float]:
    """results/s through `score_cases` (what the eval hook calls on each stored chunk), `chunk` results at a
    time, per set of assertions; and the full set through `score_case`, one result at a time."""
    pairs = [(suite.cases[i % len(suite.cases)], answers[suite.cases[i % len(suite.cases)].id]) for i in range(n)]
    results = [Result(custom_id=c.id, status="ok", text=t) for c, t in pairs]
    for i in range(0, 200, chunk):  # warm-up: nltk, the caches
        score_cases(suite, [(pairs[j][0], results[j], None) for j in range(i, min(i + chunk, n))])
    out: dict[str, float] = {}
    modes = (("rules only", without(suite, set(OVERLAP))), ("rules + ROUGE-L", without(suite, {"chrf"})),
             ("rules + ROUGE-L + chrF", suite))
    for name, s in modes:
        by_id = {c.id: c for c in s.cases}
        t0 = time.perf_counter()
        scores = []
        for i in range(0, n, chunk):  # as EvalHook._score: the chunk's (case, result, facts), then score_cases
            scores += score_cases(s, [(by_id[r.custom_id], r, None) for r in results[i:i + chunk]])
        out[name] = n / (time.perf_counter() - t0)
    by_id = {c.id: c for c in suite.cases}
    t0 = time.perf_counter()
    one_by_one = [score_case(suite, by_id[r.custom_id], r) for r in results]
    out["one by one"] = n / (time.perf_counter() - t0)
    assert one_by_one == scores  # the same scores, batched or not
    t0 = time.perf_counter()
    summary = summarize(suite, scores)
    out["summarize_s"] = time.perf_counter() - t0
    out["pass_rate"] = summary.pass_rate
    return out


class Answering(FakeGpu):
    """FakeGpu's latency and capacity, answering each case with its output."""

    def __init__(self, answers: dict[str, str], **kw: float):
        super().__init__(**kw)  # type: ignore[arg-type]
        self.answers = answers

    async def complete(self, request: Request) -> Completion:
        await super().complete(request)
        return Completion(self.answers[request.custom_id], "stop", prompt_tokens=40, completion_tokens=60)


async def one_run(store: SQLiteStore, suite: Suite, engine: Answering, job_id: str, scored: bool
                  ) -> tuple[float, float]:
    """(seconds the job ran, seconds `finish` took); the eval run's open_run and hook are not timed."""
    hook = None
    if scored:
        _, job = await open_run(store, suite, run_id=job_id)
        hook = await EvalHook.for_work(store, job, retry_s=5)
        assert hook is not None
    else:
        job = suite.job(job_id)
    final = None
    t0 = time.perf_counter()
    async for ev in run_job(job, engine, store=store, chunk_size=10, on_stored=hook.scored if hook else None):
        final = ev if isinstance(ev, FinalEvent) else final
    ran = time.perf_counter() - t0
    assert final is not None and final.outcome.value == "completed", final
    finish = 0.0
    if hook is not None:
        t0 = time.perf_counter()
        summary, _ = await hook.finish(final.outcome)
        finish = time.perf_counter() - t0
        assert summary.cases == len(suite.cases)
    return ran, finish


async def bench_runs(suite: Suite, answers: dict[str, str], args: argparse.Namespace) -> list[dict[str, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            store = SQLiteStore(Path(tmp) / f"round{k}.db")
            engine = Answering(answers, latency_s=args.latency_s, capacity=args.capacity)
            row: dict[str, float] = {}
            for scored in ((False, True) if k % 2 == 0 else (True, False)):
                ran, finish = await one_run(store, suite, engine, f"{'eval' if scored else 'plain'}-{k}", scored)
                row |= {"eval_s": ran, "finish_s": finish} if scored else {"plain_s": ran}
            row["ratio"] = row["plain_s"] / row["eval_s"]
            row["first"] = 0.0 if k % 2 == 0 else 1.0
            rows.append(row)
            await store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000, help="cases in the suite (the run's items)")
    ap.add_argument("--results", type=int, default=10_000, help="results scored")
    ap.add_argument("--rounds", type=int, default=3, help="plain job + eval run pairs, the order alternating")
    ap.add_argument("--latency-s", type=float, default=0.05, help="the fake engine's time per request")
    ap.add_argument("--capacity", type=int, default=32, help="the fake engine's requests at once")
    ap.add_argument("--chunk", type=int, default=DEFAULTS.default_chunk_size,
                    help="results scored together (default: a job's chunk size, DEFAULT_CHUNK_SIZE)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    suite = parse_suite(build_suite(args.cases, rng))
    parse_s = time.perf_counter() - t0
    answers = {c.id: answer(rng, c.expected) for c in suite.cases}
    n_asserts = len(suite.assertions(suite.cases[0]))
    print(f"suite: {args.cases} Catalan cases, {n_asserts} assertions each (is_json, json_schema, icontains, regex,"
          f" not_icontains, rouge_l, chrf), parsed in {parse_s:.2f} s; CPU, one process, one thread")

    sc = bench_scoring(suite, answers, args.results, args.chunk)
    print(f"\nscoring {args.results} results with score_cases, {args.chunk} at a time as the eval hook scores a"
          f" stored chunk (case pass rate {sc['pass_rate']:.2f})")
    print(f"{'assertions':<26}{'results/s':>11}")
    for name in ("rules only", "rules + ROUGE-L", "rules + ROUGE-L + chrF"):
        print(f"{name:<26}{sc[name]:>11.0f}")
    print(f"{'the same, one at a time':<26}{sc['one by one']:>11.0f}  (score_case: chrF counted pair by pair)")
    print(f"summarize over {args.results} scores: {sc['summarize_s'] * 1000:.0f} ms")

    rows = asyncio.run(bench_runs(suite, answers, args))
    print(f"\nrun: {args.cases} items, fake engine {args.capacity} at once x {args.latency_s * 1000:.0f} ms"
          f" (at most {args.capacity / args.latency_s:.0f} items/s), SQLite, chunk_size 10")
    print(f"{'round':<7}{'first':<7}{'plain items/s':>15}{'eval items/s':>14}{'eval/plain':>12}{'finish ms':>11}")
    for k, r in enumerate(rows):
        print(f"{k:<7}{'eval' if r['first'] else 'plain':<7}{args.cases / r['plain_s']:>15.0f}"
              f"{args.cases / r['eval_s']:>14.0f}{r['ratio']:>11.3f}x{r['finish_s'] * 1000:>11.0f}")
    ratio = statistics.median(r["ratio"] for r in rows)
    full = sc["rules + ROUGE-L + chrF"]
    print(f"\nscoring: {full:.0f} results/s with ROUGE-L + chrF, {sc['rules only']:.0f} rules only"
          f" (target >= 5000): {'yes' if full >= 5000 else 'NO'}")
    print(f"eval run / plain job: {ratio:.3f}x, median of {len(rows)} rounds (target >= 0.95):"
          f" {'yes' if ratio >= 0.95 else 'NO'}")
    print(f"finish: {statistics.median(r['finish_s'] for r in rows) * 1000:.0f} ms median")


if __name__ == "__main__":
    main()
