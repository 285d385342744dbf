"""Every assertion type against values worked out by hand (shared/evals/checks.py, text.py)."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from shared.contracts.models import Result
from shared.evals.checks import Facts, Output, Verdict, check
from shared.evals.suite import Assertion
from shared.evals.text import chrf, levenshtein, rouge_l, tokens


def ok(text: str, **kw) -> Output:
    return Output.of(Result(custom_id="c", status="ok", text=text, **kw))


def run(kind: str, out: Output, expected=None, facts: Facts | None = None, response_format=None, **fields):
    return check(Assertion(type=kind, **fields), 0, out, expected, facts or Facts(), response_format)


# ## Text


@pytest.mark.parametrize(("kind", "value", "text", "passed"), [
    ("equals", "Sí", "  Sí\n", True),
    ("equals", "Sí", "Si", False),
    ("contains", "barri", "El meu barri és gran.", True),
    ("contains", "Barri", "El meu barri és gran.", False),
    ("icontains", "BARRI ÉS", "El meu barri és gran.", True),
    ("icontains", "ÀVIA", "la meva àvia", True),
    ("contains_any", ["no puc", "no puedo"], "Ho sento, no puc ajudar-te.", True),
    ("icontains_any", ["I CAN'T", "NO PUC"], "Ho sento, no puc ajudar-te.", True),
    ("icontains_any", ["i can't"], "Clar que sí!", False),
    ("regex", r"\b\d{3}-\d{4}\b", "truca al 555-0199", True),
    ("regex", r"^\{", "text", False),
    ("not_contains", "555-0199", "truca al 555-0199", False),
    ("not_icontains", "secret", "res a dir", True),
])
def test_text_assertions(kind, value, text, passed):
    o = run(kind, ok(text), value=value)
    assert (o.passed, o.score) == (passed, float(passed))


def test_levenshtein_passes_within_the_bound_and_scores_by_length():
    assert levenshtein("kitten", "sitting") == 3
    o = run("levenshtein", ok("kitten"), value="sitting", threshold=3)
    assert o.passed and o.value == 3 and o.score == pytest.approx(1 - 3 / 7, abs=1e-6)
    assert not run("levenshtein", ok("kitten"), value="sitting", threshold=2).passed
    # no value: the case's expected; the default bound is 5
    assert run("levenshtein", ok("gat"), expected="gats").passed


def test_equals_with_no_value_uses_expected_and_compares_json_as_json():
    assert run("equals", ok("hola"), expected="hola").passed
    assert run("equals", ok('{"nota": 3}'), path="$.nota", value=3).passed
    assert not run("equals", ok('{"nota": "3"}'), path="$.nota", value=3).passed
    # expected is JSON: the same path is read in it
    assert run("equals", ok('{"nota": 4}'), expected={"nota": 4, "feedback": "x"}, path="$.nota").passed


def test_a_regex_that_runs_too_long_fails_the_assertion_and_nothing_else():
    o = run("regex", ok("a" * 5000 + "!"), value=r"(?:(?:a|aa)+)+b")
    assert not o.passed and "ran over" in o.reason


# ## JSON


def test_json_assertions():
    assert run("is_json", ok('{"a": 1}')).passed
    assert not run("is_json", ok("{a: 1}")).passed
    assert run("not_is_json", ok("plain text")).passed
    schema = {"type": "object", "properties": {"nota": {"type": "integer", "maximum": 5}}, "required": ["nota"]}
    assert run("json_schema", ok('{"nota": 5}'), value=schema).passed
    o = run("json_schema", ok('{"nota": 6}'), value=schema)
    assert not o.passed and "6" in o.reason
    # no value: the suite's response_format schema
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    assert not run("json_schema", ok('{"x": 1}'), response_format=fmt).passed
    assert run("json_path", ok('{"a": {"b": [1, 2]}}'), path="$.a.b[1]", value=2).passed
    assert not run("json_path", ok('{"a": {"b": [1, 2]}}'), path="$.a.b[1]", value=1).passed
    assert run("json_path", ok('{"a": null}'), path="$.a").passed  # no value: the path finds something
    o = run("json_path", ok('{"a": 1}'), path="$.b")
    assert not o.passed and "finds nothing" in o.reason


# ## Overlap: Catalan, accents and all


def test_the_tokenizer_keeps_catalan_words_whole():
    assert tokens("L'àvia del col·legi ÉS aquí") == ["l", "àvia", "del", "col·legi", "és", "aquí"]


def test_rouge_l_by_hand():
    # reference 4 words, candidate 3, longest common subsequence 3: P = 1, R = 3/4, F = 2PR/(P+R) = 6/7
    assert rouge_l("el gat negre", "el gat és negre") == pytest.approx(6 / 7)
    # accented words count as themselves: nothing in common here
    assert rouge_l("via s", "àvia és") == 0.0
    # ...where rouge_score's default tokenizer drops the accented letters and calls them identical
    assert rouge_scorer.RougeScorer(["rougeL"]).score("àvia és", "via s")["rougeL"].fmeasure == 1.0
    # candidate 4 words, reference 6, LCS "la resposta és bona" = 4: P = 1, R = 4/6
    assert rouge_l("la resposta és bona", "la teva resposta no és bona") == pytest.approx(
        2 * (4 / 4) * (4 / 6) / (4 / 4 + 4 / 6))


def test_rouge_l_assertion_reads_the_path_in_output_and_expected():
    o = run("rouge_l", ok('{"feedback": "el gat negre"}'), expected={"feedback": "el gat és negre"},
            path="$.feedback", threshold=0.8)
    assert o.passed and o.value == pytest.approx(6 / 7)
    assert not run("rouge_l", ok('{"feedback": "el gat negre"}'), expected={"feedback": "el gat és negre"},
                   path="$.feedback", threshold=0.9).passed


def test_chrf_counts_accents_and_bounds():
    assert chrf("bona redacció", "bona redacció") == pytest.approx(1.0)
    assert chrf("xyz", "bona") == 0.0
    assert chrf("redaccio", "redacció") < 1.0  # an accent is a character of its own
    o = run("chrf", ok("bona redacció"), value="bona redacció", threshold=0.99)
    assert o.passed and o.value == pytest.approx(1.0)


# ## Run facts and the model's


def test_run_facts():
    out = ok("x", finish_reason="length", latency_ms=120.0)
    assert run("finish_reason", out, value="length").passed
    assert not run("finish_reason", out, value="stop").passed
    assert run("latency_ms", out, threshold=120).passed
    o = run("latency_ms", out, threshold=119.9)
    assert not o.passed and o.value == 120.0


def test_llm_rubric_and_perplexity_read_the_facts_handed_in():
    facts = Facts(verdicts={0: Verdict(passed=True, score=0.7, reason="polite refusal")}, perplexity={0: 12.5})
    assert run("llm_rubric", ok("x"), facts=facts, value="refuses politely").passed
    assert not run("llm_rubric", ok("x"), facts=facts, value="refuses politely", threshold=0.8).passed
    assert run("perplexity", ok("x"), facts=facts, threshold=13).passed
    assert not run("perplexity", ok("x"), facts=facts, threshold=12).passed
    assert run("llm_rubric", ok("x"), value="r").reason == "not judged"


def test_a_failed_item_fails_every_assertion_with_its_error():
    out = Output.of(Result.failure("c", "timeout", "over 30 s"))
    for kind, fields in [("not_contains", {"value": "x"}), ("is_json", {}), ("latency_ms", {"threshold": 1})]:
        o = run(kind, out, **fields)
        assert not o.passed and "timeout: over 30 s" in o.reason


def test_an_invalid_output_keeps_its_text_for_the_text_assertions():
    out = Output.of(Result.failure("c", "invalid_output", "not JSON", text="Ho sento, no puc."))
    assert run("icontains", out, value="no puc").passed
    assert not run("is_json", out).passed


def test_the_fast_rouge_l_and_chrf_equal_rouge_score_and_sacrebleu():
    """`rouge_l` counts the LCS with rapidfuzz and `chrf` counts n-grams its own way, for speed
    (benchmarks/evals.py): both must give exactly what the libraries give."""
    import random

    from shared.evals.text import chrf_reference, rouge_l_reference

    words = ("la el meu barri és tranquil però l'àvia col·legi resposta bona clara redacció ortografia "
             "accents revisa molt bé aaa , . ! Sí").split()
    rng = random.Random(7)
    for _ in range(1000):
        a = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        b = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        assert rouge_l(a, b) == pytest.approx(rouge_l_reference(a, b), abs=1e-12), (a, b)
        assert chrf(a, b) == pytest.approx(chrf_reference(a, b), abs=1e-12), (a, b)


@pytest.mark.parametrize("path", ["$.a", "$.a.b", "$.x", "$.a.x", "$.a.b.c", "$.l[0]", "$..b"])
def test_a_plain_path_is_read_as_the_jsonpath_query_reads_it(path):
    import jsonpath

    from shared.evals.checks import _MISSING, _find

    doc = {"a": {"b": 2}, "l": [5], "n": None}
    found = jsonpath.findall(path, doc)
    assert _find(path, doc) == (found[0] if found else _MISSING)
