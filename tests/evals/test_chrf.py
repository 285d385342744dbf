"""chrF counted a batch at a time (shared/evals/chrf.py) against sacrebleu's own sentence chrF."""

from __future__ import annotations

import random
import threading

import pytest
from sacrebleu.metrics import CHRF

from shared.evals import chrf as chrf_module
from shared.evals.chrf import _f_score, chrf, chrf_many, chrf_python
from shared.evals.text import chrf_reference, rouge_l, rouge_l_reference

WORDS = ("la el meu barri és tranquil però l'àvia col·legi resposta bona clara redacció ortografia accents "
         "Sí SÍ Ñandú façana pingüí 2024 3,5 , . ! ? « » — ab ba aaa").split()
ODD = ["😀", "👍🏽", "🇨🇦", "中文", "ελληνικά", "e\u0301", "\u0301", "\u00a0", "\u2003", "\t", "\n", "\r\n", "\x00",
       "a\x00b", "\ud800", "\U0010ffff", "\u200b", "ﬁ", "ǅ", "İ"]


def text(rng: random.Random, most: int) -> str:
    """Catalan words, now and then something odd (emoji, combining marks, NUL, a lone surrogate, odd spaces)."""
    n = rng.choice([0, 0, 1, 2, 5, rng.randint(0, most)])
    return rng.choice([" ", "  ", "\n", "\t "]).join(
        rng.choice(ODD) if rng.random() < 0.15 else rng.choice(WORDS) for _ in range(n))


def pairs(seed: int, count: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = [(text(rng, 60), text(rng, 40)) for _ in range(count)]
    rng.shuffle(specials := [("", ""), ("", "la"), ("la", ""), (" ", "\t\n"), ("a", "a"), ("ab", "ab"),
                             ("abcdef", "abcdef"), ("abcdefg", "abcdefg"), ("aaaaaaaa", "aaa"), ("😀😀", "😀"),
                             ("\x00", "\x00"), ("\ud800", "\ud800"), ("la àvia", "L'ÀVIA")])
    return specials + out


def test_a_batch_equals_sacrebleu_on_a_thousand_unicode_pairs():
    ps = pairs(7, 1000)
    expected = [chrf_reference(h, r) for h, r in ps]
    assert chrf_many(ps) == expected
    for size in (1, 3, 10, 64):
        assert [s for i in range(0, len(ps), size) for s in chrf_many(ps[i:i + size])] == expected, size


def test_rouge_l_equals_rouge_score_on_the_same_pairs():
    for h, r in pairs(11, 300):
        assert rouge_l(h, r) == pytest.approx(rouge_l_reference(h, r), abs=1e-12), (h, r)


def test_long_texts_and_large_alphabets():
    rng = random.Random(3)
    long = " ".join(rng.choice(WORDS) for _ in range(6000))  # about 40,000 characters
    han = "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(5000))  # thousands of distinct characters
    ps = [(long, long[::-1]), (long[:20000], long), (han, han[1000:] + han[:1000]), (han, long), ("la", long)]
    assert chrf_many(ps) == [chrf_reference(h, r) for h, r in ps]


def test_batches_that_do_not_fit_are_halved_and_a_pair_too_large_is_counted_in_python(monkeypatch):
    ps = pairs(5, 60)
    expected = [chrf_reference(h, r) for h, r in ps]
    monkeypatch.setattr(chrf_module, "BATCH_KEYS", 2000)
    assert chrf_many(ps) == expected
    monkeypatch.setattr(chrf_module, "MAX_KEYS", 500)
    assert chrf_many(ps) == expected
    assert [chrf_python(h, r) for h, r in ps] == expected


def test_the_f_score_is_sacrebleus_float_for_float():
    rng = random.Random(1)
    for _ in range(2000):
        hyp, ref = rng.randint(0, 12), rng.randint(0, 12)
        match = [rng.randint(0, max(0, min(hyp, ref) - n + 1)) for n in range(1, 7)]
        stats = [x for n in range(1, 7) for x in (max(hyp - n + 1, 0) if ref - n + 1 > 0 else 0,
                                                  max(ref - n + 1, 0), match[n - 1])]
        assert _f_score(hyp, ref, match) == CHRF()._compute_f_score(stats) / 100.0


def test_threads_score_at_the_same_time():
    ps = pairs(9, 400)
    expected = chrf_many(ps)
    found: list[list[float]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        for i in range(0, len(ps), 10):
            found[k] += chrf_many(ps[i:i + 10])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == [expected] * 4
    assert chrf("", "") == 0.0 and chrf_many([]) == []
