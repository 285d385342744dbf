"""Text metrics that treat Catalan (and any language) correctly: ROUGE-L over a Unicode tokenizer,
chrF as sacrebleu computes it (counted in batches: shared/evals/chrf.py), and edit distance.

rouge_score's default tokenizer lower-cases and then keeps only [a-z0-9]: "àvia" becomes "via",
"és" becomes "s". Here a token is a run of Unicode letters and digits (NFC, case-folded), with
Catalan's middle dot kept inside a word ("col·legi") and apostrophes splitting ("l'escola" is "l",
"escola"), so accented words count as themselves. Never `evaluate.load`: it downloads at run time.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

import regex
from rapidfuzz.distance import LCSseq, Levenshtein
from sacrebleu.metrics import CHRF

from shared.evals.chrf import chrf, chrf_many

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

__all__ = ["chrf", "chrf_many", "chrf_reference", "levenshtein", "rouge_l", "rouge_l_reference", "tokens"]

# letters and digits (any script), with a middle dot (U+00B7) or a raised one (U+2027, U+0387) between two
# letters kept inside the word
_WORD = regex.compile(r"[\p{L}\p{N}]+(?:[\u00b7\u2027\u0387][\p{L}\p{N}]+)*")


def tokens(text: str) -> list[str]:
    """Words of `text`: NFC, case-folded, Unicode letters and digits."""
    return _WORD.findall(unicodedata.normalize("NFC", text).casefold())


class UnicodeTokenizer:
    """A tokenizer for rouge_score (it calls `tokenize`)."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


@lru_cache(maxsize=1)
def _rouge() -> RougeScorer:
    # imported on first use: rouge_score imports nltk, which takes over a second (scipy, and more)
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())


def rouge_l_reference(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure computed by rouge_score itself (with the Unicode tokenizer): what `rouge_l`
    is checked against (tests/evals/test_checks.py)."""
    return float(_rouge().score(reference, candidate)["rougeL"].fmeasure)


@lru_cache(maxsize=4096)
def _reference_tokens(reference: str) -> tuple[str, ...]:
    return tuple(tokens(reference))


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure, 0..1 (0 when either side has no word): rouge_score's, with the longest common
    subsequence counted by rapidfuzz (C, not a Python table: 7x faster) over the same tokens, and each
    reference's tokens kept (a case's reference is the same for every run)."""
    cand, ref = tokens(candidate), _reference_tokens(reference)
    if not cand or not ref:
        return 0.0
    lcs = LCSseq.similarity(cand, ref)
    return 2.0 * lcs / (len(cand) + len(ref))  # 2PR / (P + R), P = lcs / |cand|, R = lcs / |ref|


_SACREBLEU = CHRF()  # chrF (character 6-grams, beta 2), sacrebleu's defaults


def chrf_reference(candidate: str, reference: str) -> float:
    """chrF from sacrebleu's `sentence_score`, 0..1: what `chrf` and `chrf_many` are checked against."""
    return float(_SACREBLEU.sentence_score(candidate, [reference]).score) / 100.0


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) in characters."""
    return int(Levenshtein.distance(a, b))
