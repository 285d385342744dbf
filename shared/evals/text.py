"""Text metrics that treat Catalan (and any language) correctly: ROUGE-L over a Unicode tokenizer,
chrF from sacrebleu, and edit distance.

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
from rapidfuzz.distance import Levenshtein
from sacrebleu.metrics import CHRF

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

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


@lru_cache(maxsize=1)
def _chrf() -> CHRF:
    return CHRF()  # chrF (character 6-grams, beta 2), sacrebleu's defaults


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure, 0..1 (0 when either side has no word)."""
    return float(_rouge().score(reference, candidate)["rougeL"].fmeasure)


def chrf(candidate: str, reference: str) -> float:
    """chrF, 0..1 (sacrebleu's score over 100)."""
    return float(_chrf().sentence_score(candidate, [reference]).score) / 100.0


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) in characters."""
    return int(Levenshtein.distance(a, b))
