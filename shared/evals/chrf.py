"""chrF for many (output, reference) pairs at once, equal to sacrebleu's sentence chrF float for float
(`chrf_reference` in shared/evals/text.py; tests/evals/test_chrf.py), counted by numpy over a whole batch.

sacrebleu counts each line's character n-grams (n = 1..6, whitespace removed) and, per order, sums
min(output's count, reference's count) over the n-grams the two share. Here a batch's outputs, then its
references, are laid end to end, each line followed by a separator, and every n-gram gets an exact id,
with no hashing and no sorting (numpy's sort is slow on some CPUs, this machine's AVX-512 among them): a
scratch array indexed by a key keeps one of the positions that have the key (`buf[keys] = positions`,
then `buf[keys]`), so equal keys get equal ids. A character's key is its code point (the ids are then
renumbered 0..C-1, and the outputs' and the references' separators made C and C + 1); a 1-gram's key is
(its pair, its character), an n-gram's (the id of its first n - 1 characters, its last character). So an
id stands for one n-gram of one pair, and an n-gram that runs into the next line holds a separator: it
never matches. One bincount of the ids in the outputs and in the references, min(the two), summed by
pair and order, gives sacrebleu's match counts, and `_f_score` its F-score. A batch whose keys would
not fit `BATCH_KEYS` is halved; a pair too large for `MAX_KEYS` alone is counted with Counters.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import CHRF

_CHRF = CHRF()  # chrF (character 6-grams, beta 2), sacrebleu's defaults
ORDER: int = _CHRF.char_order
_FACTOR: int = _CHRF.beta**2
#: the most keys (characters x distinct characters) a batch may have, so that its scratch array stays in
#: the CPU's cache: a larger one is split (a batch is cut at _BATCH_CHARS characters first)
BATCH_KEYS = 1 << 20
_BATCH_CHARS = BATCH_KEYS >> 7
#: the most keys of one pair (a thread's scratch array grows to as many int64: 32 MiB); a larger one is
#: counted in Python
MAX_KEYS = 1 << 22
#: code points are below this (the scratch array is at least as long: it is indexed by them first)
_CODE_POINTS = 0x110000
_local = threading.local()


def _line(text: str) -> str:
    """`text` without whitespace, as sacrebleu's chrF counts it."""
    return "".join(text.split())


def _scratch(size: int) -> np.ndarray:
    """This thread's scratch array, at least `size` long (what it holds is never read before written; its
    pages are only mapped where written)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = np.empty(max(size, _CODE_POINTS), dtype=np.int64)
    return buf


def _ids(buf: np.ndarray, keys: np.ndarray, places: np.ndarray) -> np.ndarray:
    """An id per key (the place of one of those that have it): equal keys, equal ids."""
    buf[keys] = places
    return buf[keys]


def _f_score(hyp_length: int, ref_length: int, match: Sequence[int]) -> float:
    """sacrebleu's `CHRF._compute_f_score` / 100 for its defaults (beta 2, no eps smoothing), from the two
    lines' lengths and each order's matches: the same float operations in the same order. An order counts
    where both lines have n-grams of it (sacrebleu counts no output n-grams of an order the reference has
    none of)."""
    avg_prec = avg_rec = 0.0
    effective = 0
    for n in range(1, ORDER + 1):
        n_hyp, n_ref = hyp_length - n + 1, ref_length - n + 1
        if n_hyp > 0 and n_ref > 0:
            avg_prec += match[n - 1] / n_hyp
            avg_rec += match[n - 1] / n_ref
            effective += 1
    if effective == 0:
        return 0.0
    avg_prec /= effective
    avg_rec /= effective
    if not avg_prec + avg_rec:
        return 0.0
    score = (1 + _FACTOR) * avg_prec * avg_rec
    score /= _FACTOR * avg_prec + avg_rec
    return 100 * score / 100.0


def chrf_python(candidate: str, reference: str) -> float:
    """chrF counted with Python Counters (every order in one): for a pair too large for `MAX_KEYS`."""
    hyp_line, ref_line = _line(candidate), _line(reference)
    hyp, ref = (Counter(line[i:i + n] for n in range(1, ORDER + 1) for i in range(len(line) - n + 1))
                for line in (hyp_line, ref_line))
    match = [0] * ORDER
    for gram in hyp.keys() & ref.keys():
        match[len(gram) - 1] += min(hyp[gram], ref[gram])
    return _f_score(len(hyp_line), len(ref_line), match)


def _measure(pairs: Sequence[tuple[str, str]], limit: int) -> list[float] | None:
    """chrF of each (output, reference) pair, whitespace removed; None where the keys would be over `limit`."""
    count = len(pairs)
    if not count:
        return []
    lines = [h for h, _ in pairs] + [r for _, r in pairs]  # the outputs, then the references
    lens = [len(line) + 1 for line in lines]  # each with a separator after it
    ends = list(itertools.accumulate(lens))
    size, outputs = ends[-1], ends[count - 1]
    points = np.frombuffer(("\0".join(lines) + "\0").encode("utf-32-le", "surrogatepass"),
                           dtype=np.uint32).astype(np.int64)
    # each character as 0..C-1 (the positions kept for the characters, those that kept themselves, in
    # order); the outputs' separators as C, the references' as C + 1: an n-gram that runs into the next line
    # holds one, so it has no like on the other side and never matches
    positions = np.arange(size, dtype=np.int64)
    first = _ids(_scratch(_CODE_POINTS), points, positions)
    renumber = np.cumsum(first == positions) - 1
    chars, width = renumber.take(first), int(renumber[-1]) + 3
    chars[np.array(ends) - 1] = [width - 2] * count + [width - 1] * count
    if size * width > limit:
        return None
    buf = _scratch(size * width)
    # the n-grams' ids, order after order: an id is the position of one n-gram like it
    blocks = [max(size - n + 1, 0) for n in range(1, ORDER + 1)]
    starts = [0, *itertools.accumulate(blocks)]
    bins = np.empty(starts[-1], dtype=np.int64)
    ids = bins[:size]
    keys = np.repeat([p * width for p in range(count)] * 2, lens) + chars  # (pair, character)
    for n in range(1, min(ORDER, size) + 1):
        k = blocks[n - 1]
        if n > 1:  # (the id of the first n - 1 characters, the last character)
            keys = ids[:k] * width + chars[n - 1:]
            ids = bins[starts[n - 1]:starts[n]]
        buf[keys] = positions[:k]
        buf.take(keys, out=ids)
    # each id's bin: (n - 1) * size + id for an output's n-gram, past ORDER * size for a reference's
    bins += np.repeat([x for n in range(ORDER) for x in (n * size, (n + ORDER) * size)],
                      [x for k in blocks for x in (min(outputs, k), k - min(outputs, k))])
    counts = np.bincount(bins, minlength=2 * ORDER * size)
    shared = np.minimum(counts[:ORDER * size], counts[ORDER * size:]).reshape(ORDER, size)  # by id: matches
    # each pair's matches: its ids' (by position, in its output or its reference) summed
    by_line = np.add.reduceat(shared, [0, *ends[:-1]], axis=1)
    match = (by_line[:, :count] + by_line[:, count:]).T.tolist()
    return [_f_score(lens[p] - 1, lens[count + p] - 1, match[p]) for p in range(count)]


def _measured(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """`_measure`, halving the batch while its keys do not fit."""
    scores = _measure(pairs, MAX_KEYS if len(pairs) == 1 else BATCH_KEYS)
    if scores is not None:
        return scores
    if len(pairs) == 1:
        return [chrf_python(*pairs[0])]
    half = len(pairs) // 2
    return _measured(pairs[:half]) + _measured(pairs[half:])


def chrf_many(pairs: Sequence[tuple[str, str]]) -> list[float]:
    """chrF, 0..1, of each (output, reference) pair: sacrebleu's sentence chrF, counted together."""
    lines = [(_line(hyp), _line(ref)) for hyp, ref in pairs]
    scores: list[float] = []
    start = chars = 0
    for i, (hyp, ref) in enumerate(lines):
        chars += len(hyp) + len(ref)
        if chars > _BATCH_CHARS and i > start:
            scores += _measured(lines[start:i])
            start, chars = i, len(hyp) + len(ref)
    return scores + _measured(lines[start:])


def chrf(candidate: str, reference: str) -> float:
    """chrF of one pair, 0..1 (`chrf_many` of one)."""
    return chrf_many([(candidate, reference)])[0]
