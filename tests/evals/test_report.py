"""An eval run's report (shared/evals/report.py, `llm-jobs eval report`): the confusion matrix counted by
hand, a point per scored run in the pass-rate chart, a bar per assertion, a page that loads nothing and
escapes everything the store gave it, and the command end to end on a real SQLite store."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from handler.evals import keep_suite
from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord
from shared.evals.report import confusion, grading_labels, render_report
from shared.evals.scoring import CaseScore, summarize
from shared.evals.suite import parse_suite
from shared.stores.sqlite import SQLiteStore

SUITE = """\
id: grading
grading: {output: $.nota, labels: [0, 1, 2, 3]}
assert:
  - {type: is_json}
  - {type: icontains, value: "gràcies", metric: polite}
cases:
""" + "".join(f"""\
  - id: c{i}
    prompt: "Nota {i}?"
    expected: {{nota: {i % 4}}}
""" for i in range(8))

HOSTILE = "<script>alert(1)</script>"
#: case id -> (teacher's label, model's label, passed); c3 has no model label, c6 no teacher's, c7's is off the scale
CASES = {"c0": (0, 0, True), "c1": (1, 1, True), "c2": (1, 2, False), "c3": (2, None, False),
         "c4": (3, 3, True), "c5": (3, 1, False), "c6": (None, 2, True), "c7": (2, 7, False)}
#: counted by hand from CASES: rows the teacher's 0..3, columns the model's 0..3, then "none"
MATRIX = [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 2], [0, 1, 0, 1, 0]]
T0 = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


def outcome(metric: str, kind: str, passed: bool, reason: str = "") -> dict:
    return {"type": kind, "metric": metric, "passed": passed, "score": float(passed), "weight": 1.0, "value": None,
            "reason": reason}


def results(run_id: str) -> list[CaseResult]:
    out = []
    for cid, (expected, label, passed) in CASES.items():
        outcomes = [outcome("is_json", "is_json", cid != "c3", "" if cid != "c3" else "the output is not JSON"),
                    outcome("polite", "icontains", passed, "" if passed else f"no 'gràcies' in {HOSTILE}")]
        out.append(CaseResult(run_id=run_id, case_id=cid, passed=passed, score=float(passed), outcomes=outcomes,
                              label=label, expected_label=expected,
                              output=HOSTILE if cid == "c5" else ("x" * 900 if cid == "c2" else '{"nota": 1}')))
    return out


def scores(rows: list[CaseResult]) -> dict:
    suite = parse_suite(SUITE)
    cases = [CaseScore(case_id=r.case_id, passed=r.passed, score=r.score, outcomes=r.outcomes, label=r.label,
                       expected_label=r.expected_label) for r in rows]
    return summarize(suite, cases).model_dump(mode="json")


def run(run_id: str, day: int, **kw) -> RunRecord:
    return RunRecord(id=run_id, suite_id="grading", version=parse_suite(SUITE).version(), job_id=run_id,
                     created_at=T0 + timedelta(days=day), **kw)


def finished(run_id: str, day: int, **kw) -> RunRecord:
    return run(run_id, day, status=JobStatus.completed, scores=scores(results(run_id)),
               finished_at=T0 + timedelta(days=day, minutes=2), **kw)


class Tables(HTMLParser):
    """The page's tags, checked for balance, and the text of each cell of its tables, by the table's class."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.table: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.table = dict(attrs).get("class") or ""
            self.tables[self.table] = []
        elif tag == "tr" and self.table is not None:
            self.tables[self.table].append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else ''}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self.cell is not None and self.table is not None:
            self.tables[self.table][-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def parsed(html: str) -> Tables:
    page = Tables()
    page.feed(html)
    page.close()
    return page


def report(**kw) -> str:
    rows = results("r3")
    defaults = {"run": finished("r3", 3, model=f'"><b>{HOSTILE}', git_rev="abc123", baseline="r1",
                                regressions={"cases": ["c2"], "metrics": [
                                    {"metric": "pass rate", "baseline": 0.75, "now": 0.5, "why": HOSTILE}]}),
                "history": [finished("r0", 0), run("r1", 1, status=JobStatus.running), finished("r2", 2)],
                "results": rows, "suite": parse_suite(SUITE)}
    return render_report(**(defaults | kw))


def test_the_confusion_matrix_counts_each_pair_and_the_missing_labels():
    rows = results("r")
    labels = grading_labels(rows, parse_suite(SUITE))
    assert labels == [0, 1, 2, 3]
    m = confusion(rows, labels)
    assert [[*row, none] for row, none in zip(m.counts, m.none, strict=True)] == MATRIX
    assert m.unrated == 1  # c6: no teacher's label
    # with no suite: the labels seen (7 among them)
    assert grading_labels(rows, None) == [0, 1, 2, 3, 7]
    # a suite without grading has no matrix
    assert grading_labels(rows, parse_suite(SUITE.replace("grading: {output: $.nota, labels: [0, 1, 2, 3]}\n",
                                                          ""))) is None


def test_the_report_shows_the_matrix_the_history_and_each_assertion():
    html = report()
    page = parsed(html)
    assert page.problems == [] and page.stack == []
    matrix = page.tables["matrix"]
    assert matrix[0] == ["teacher ↓ · model →", "0", "1", "2", "3", "none", "total"]
    assert [[int(c) for c in row[1:6]] for row in matrix[1:]] == MATRIX
    # r1 has no scores: r0, r2 and the run itself are drawn
    assert len(re.findall(r'<circle class="point', html)) == 3
    assert "1 earlier run(s) with no scores" in html
    assert html.index("r0</title>") < html.index("r2</title>") < html.index("r3</title>")
    bars = {row[0]: row for row in page.tables["assertions"][1:]}
    assert bars["is_json"][4].startswith("87.5% (7/8)") and bars["polite"][4].startswith("50.0% (4/8)")
    assert html.count('class="assertion"') == 2
    assert "quadratic weighted kappa" in html and "exact agreement" in html
    # the failed cases, each with its failed assertions and a cut output
    failed = re.findall(r'<tr class="failed-case">\s*<td class="case"><code>(\w+)</code>', html)
    assert failed == ["c2", "c3", "c5", "c7"]
    assert "x" * 500 + "…" in html and "x" * 501 not in html and "400 more character(s)" in html
    assert "pass → fail" in html and "<code>c2</code>" in html


def test_the_page_loads_nothing_and_escapes_what_the_store_gave():
    html = report()
    assert not re.search(r"<[^>]*\b(src|href|action|poster|srcset)\s*=", html, re.IGNORECASE)
    assert not re.search(r"<(link|script|iframe|object|embed|img|base)\b", html, re.IGNORECASE)
    assert not re.search(r"<[^>]*(https?:|//)", html.replace("</", "<"))  # no URL in any tag
    assert "url(" not in html and "@import" not in html
    assert "default-src 'none'" in html
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '"><b>' not in html and "&#34;&gt;&lt;b&gt;" in html


def test_an_unfinished_run_says_so_and_shows_what_is_stored():
    rows = results("r3")[:5]
    html = report(run=run("r3", 3, status=JobStatus.running), results=rows)
    assert "not finished" in html and "5 case result(s) of 8 cases" in html
    assert "(so far)" in html and html.count('class="assertion"') == 2
    # without the suite: no provisional scores, still a page
    html = report(run=run("r3", 3, status=JobStatus.running), results=rows, suite=None, history=[])
    assert "not finished" in html and "No assertion scores yet" in html and parsed(html).problems == []


def eval_cli(db, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SQLITE_PATH": str(db), "SUPABASE_URL": "", "DATABASE_URL": "", "COLUMNS": "200",
           "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "shared.cli", "eval", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=cwd)


async def test_the_command_writes_the_report_of_a_stored_run(tmp_path):
    db = tmp_path / "jobs.db"
    store = SQLiteStore(db)
    await keep_suite(store, parse_suite(SUITE), None)
    for i, run_id in enumerate(("first", "second")):
        await store.create_run(run(run_id, i))
        await store.write_case_results(results(run_id))
        await store.finish_run(run_id, JobStatus.completed, scores(results(run_id)), None)
        await asyncio.sleep(0.002)
    await store.close()

    out = tmp_path / "report.html"
    done = await asyncio.to_thread(eval_cli, db, "report", "second", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert len(re.findall(r'<circle class="point', html)) == 2 and 'id="grading"' in html
    assert parsed(html).problems == [] and HOSTILE not in html
    default = await asyncio.to_thread(eval_cli, db, "report", "first", "--history", "1", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "first.report.html").is_file()
    unknown = await asyncio.to_thread(eval_cli, db, "report", "nope", "-o", str(tmp_path / "nope.html"))
    assert unknown.returncode == 2 and "no eval run 'nope'" in unknown.stderr
    assert not (tmp_path / "nope.html").exists()
