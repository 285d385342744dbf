"""A fine-tuning dataset's lines read, checked, cleaned, deduplicated and split, for `llm-jobs data prepare`
(README, "Fine-tuning"). Pure, like the rest of layer 1: the caller hands the bytes in, and no tokenizer is
loaded here (token counts are measured in shared/cli/data.py; `token_stats` only sums them).

A line is a chat, `{"messages": [...]}`, or `{"prompt": "...", "completion": "..."}` with an optional
`"system"`, which becomes `[system?, user: prompt, assistant: completion]`. A `custom_id` is accepted and not
carried over: the written ids are `train-000001`, `eval-000001`, ... (shared/contracts/training.py), and every
report names an input line by its number. Any other top-level key, and a turn's `name`, is ignored and
counted, so that a dataset's own `id` or `source` does not refuse every line while a typo (`sytem`) still
shows in the report.

The input is treated as hostile: a line over `MAX_LINE_BYTES`, bytes that are not UTF-8, JSON nested deeper
than jsontext's cap, a number too long to convert and a chat over `MAX_TURNS` turns are each a bad line. A bad
line is a list of Issues that name its line and field (`line 12, field 'messages.2.role'`, dotted like every
other field path here) and is left out; it never stops the lines after it.

Cleaning (`clean`): each turn's text is NFC-normalized, `\\r\\n` and a lone `\\r` become `\\n`, control
characters other than `\\n` and `\\t` (and unpaired surrogates, which a JSON escape can smuggle in) are removed,
and surrounding whitespace is trimmed. An example whose assistant turn is left empty, or whose user turn is, is
dropped with its reason; a system turn left empty is removed.

Duplicates (`Deduper`): an exact duplicate is the same cleaned conversation; a near duplicate has word-shingle
Jaccard similarity of at least the threshold with an earlier kept example, over its user and assistant turns
(a system prompt shared by a whole dataset would make every example look alike), estimated with datasketch's
MinHash LSH and then checked against that example's signature. The first occurrence is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from shared.contracts.errors import ConfigError, InputError, Issue
from shared.contracts.jsontext import JsonProblem, decode_utf8, loads_line
from shared.contracts.models import Item, Message
from shared.contracts.training import EVAL_PREFIX, TRAIN_PREFIX, example_issues

#: a longer line is a bad line (about 250k tokens: far past any sequence length worth training on)
MAX_LINE_BYTES = 1 << 20
#: a bigger file is refused whole (every kept example is held in memory until it is written)
MAX_FILE_BYTES = 1 << 30
#: turns in one chat
MAX_TURNS = 512
#: issues kept per bad line, and in all (every bad line is counted)
ISSUES_PER_LINE, ISSUES_KEPT = 3, 200
#: (duplicate, first) pairs kept for the report, and distinct ignored key names counted
DUPLICATES_KEPT, IGNORED_KEYS_KEPT = 50, 50
#: near duplicates: words per shingle, MinHash permutations, and the threshold's allowed range (MinHashLSH
#: needs at least two bands: above 0.98 it has one)
SHINGLE_WORDS, NUM_PERM = 3, 128
NEAR_DUP_MIN, NEAR_DUP_MAX = 0.5, 0.98
#: shingles hashed into a signature at a time (the batch's array is shingles x NUM_PERM)
_SHINGLE_BATCH = 4096

_KNOWN = frozenset({"messages", "prompt", "completion", "system", "custom_id"})
_ROLES = ("system", "user", "assistant")
#: control characters but \t and \n (\r is rewritten first), C1 controls, and unpaired surrogates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_WORD = re.compile(r"\w+")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: pydantic's loc segments for the branches of Message.content's union
_BRANCHES = frozenset({"str", "list[TextPart]"})


class Drop(StrEnum):
    """Why a valid line is not written."""

    empty_assistant = "empty_assistant"
    empty_turn = "empty_turn"
    exact_duplicate = "exact_duplicate"
    near_duplicate = "near_duplicate"


@dataclass(frozen=True, slots=True)
class Example:
    """One valid line: its turns as (role, text) pairs, and where it came from."""

    line: int
    turns: tuple[tuple[str, str], ...]
    #: it was a prompt/completion line
    converted: bool = False
    #: top-level keys (and turn keys) that were ignored, as reported
    ignored: tuple[str, ...] = ()

    def messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": text} for role, text in self.turns]


# ## Reading


def iter_lines(stream: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | Issue]]:
    """(line number, its bytes without the line end) for each line of `stream`, or an Issue for a line over
    `limit` bytes, which is skipped without being held whole. Lines end at `\\n` only (JSONL), whatever else
    the text holds."""
    n = 0
    while raw := stream.readline(limit + 1):
        n += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
            yield n, Issue(f"the line is longer than {limit} bytes", line=n)
        else:
            yield n, raw.removesuffix(b"\n").removesuffix(b"\r")


def parse_line(raw: bytes, line: int) -> Example | list[Issue]:
    """The line as an Example, or the Issues that make it a bad line (at most ISSUES_PER_LINE)."""
    try:
        text = decode_utf8(raw)
    except InputError as e:  # its line counts from the start of `raw`: 1
        return [replace(i, line=line) for i in e.issues]
    try:
        value = loads_line(text, line)
    except JsonProblem as e:
        return [e.issue]
    except ValueError as e:  # a number past Python's digit limit for int()
        return [Issue(f"not valid JSON: {str(e).split(':')[0]}", line=line)]
    return _example(value, line)


def _example(value: Any, line: int) -> Example | list[Issue]:
    if not isinstance(value, dict):
        return [Issue(f"a line must be a JSON object, not {_kind(value)}", line=line)]
    ignored = [_safe_key(k) for k in value if k not in _KNOWN]
    if "messages" in value:
        clash = next((k for k in ("prompt", "completion", "system") if k in value), None)
        if clash:
            return [Issue("give 'messages', or 'prompt' and 'completion', not both (a system turn goes in "
                          "'messages')", field=clash, line=line)]
        turns, issues, dropped_names = _turns(value["messages"], line)
        ignored += ["messages.*.name"] * dropped_names
        converted = False
    elif "prompt" in value or "completion" in value:
        turns, issues = _prompt_completion(value, line)
        converted = True
    else:
        return [Issue("needs 'messages', or 'prompt' and 'completion'", line=line)]
    if issues:
        return issues[:ISSUES_PER_LINE]
    problem = example_issues(Item(custom_id="x", messages=[Message(role=r, content=t) for r, t in turns]))
    if problem:  # a chat's shape: its turns, taken together
        return [Issue(problem.removeprefix("field 'messages': "), field="messages", line=line)]
    return Example(line, tuple(turns), converted, tuple(dict.fromkeys(ignored)))


def _turns(raw: Any, line: int) -> tuple[list[tuple[str, str]], list[Issue], int]:
    """(turns, issues, how many turns had a `name`, which is dropped)."""
    if not isinstance(raw, list) or not raw:
        kind = "an empty list" if isinstance(raw, list) else _kind(raw)
        return [], [Issue(f"must be a non-empty list of turns, not {kind}", field="messages", line=line)], 0
    if len(raw) > MAX_TURNS:
        return [], [Issue(f"{len(raw)} turns: at most {MAX_TURNS}", field="messages", line=line)], 0
    turns, issues, names = [], [], 0
    for i, turn in enumerate(raw):
        try:
            m = Message.model_validate(turn)
        except ValidationError as e:
            issues += _turn_issues(e, f"messages.{i}", line)
            if len(issues) >= ISSUES_PER_LINE:
                break
            continue
        names += m.name is not None
        turns.append((m.role, m.text()))
    return turns, issues, names


def _turn_issues(e: ValidationError, at: str, line: int) -> list[Issue]:
    """Message's errors, with the content union's branch names taken out of the path and its two "not a
    string" / "not a list" errors said once."""
    errors = [(tuple(p for p in err["loc"] if p not in _BRANCHES), err) for err in e.errors()]
    deep = any(loc[:1] == ("content",) and len(loc) > 1 for loc, _ in errors)
    out: list[Issue] = []
    said_content = False
    for loc, err in errors:
        if loc == ("content",) and err["type"] in ("string_type", "list_type"):
            if deep or said_content:
                continue
            said_content = True
            msg = "must be a string or a list of text parts ({'type': 'text', 'text': '...'})"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (a turn has 'role', 'content' and optionally 'name')"
        elif not loc:
            msg = f"a turn must be an object with 'role' and 'content', not {_kind(err.get('input'))}"
        else:
            msg = err["msg"]
        out.append(Issue(msg, field=".".join([at, *(_safe_key(str(p)) for p in loc)]), line=line))
    return out


def _prompt_completion(value: dict[str, Any], line: int) -> tuple[list[tuple[str, str]], list[Issue]]:
    issues = []
    for key in ("prompt", "completion", "system"):
        v = value.get(key)
        if key == "system" and v is None:  # absent or null: no system turn
            continue
        if key not in value:
            issues.append(Issue("missing: a prompt/completion line needs both", field=key, line=line))
        elif not isinstance(v, str):
            issues.append(Issue(f"must be a string, not {_kind(v)}", field=key, line=line))
    if issues:
        return [], issues
    system = [("system", value["system"])] if value.get("system") is not None else []
    return [*system, ("user", value["prompt"]), ("assistant", value["completion"])], []


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _safe_key(key: str) -> str:
    """A key from the input as a report may show it: plain names as they are, anything else quoted and cut
    (rich markup, escape sequences and megabyte keys stay out of the terminal)."""
    return key if _PLAIN_KEY.match(key) else repr(key[:40])


# ## Cleaning


def clean_text(text: str) -> str:
    """NFC, `\\n` line ends, no control characters but `\\n` and `\\t`, no surrounding whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    return unicodedata.normalize("NFC", text).strip()


def clean(example: Example) -> Example | Drop:
    """The example with every turn cleaned, or why it is dropped: an assistant or user turn left empty. A system
    turn left empty is removed (an export's `"system": ""` means no system prompt)."""
    turns = tuple((role, text) for role, text in ((r, clean_text(t)) for r, t in example.turns)
                  if text or role != "system")
    if any(not text for role, text in turns if role == "assistant"):
        return Drop.empty_assistant
    if any(not text for _, text in turns):
        return Drop.empty_turn
    return example if turns == example.turns else replace(example, turns=turns)


# ## Duplicates


class Deduper:
    """Remembers the kept examples; `check` says whether a new one duplicates one of them (and which line).

    Memory is linear in the kept examples: a 16-byte digest each, and with near duplicates on, a MinHash
    signature (NUM_PERM uint32) plus the LSH index's band keys (8-byte digests), about 2 KB an example."""

    def __init__(self, near_threshold: float | None):
        if near_threshold is not None and not NEAR_DUP_MIN <= near_threshold <= NEAR_DUP_MAX:
            raise ValueError(f"the near-duplicate threshold must be from {NEAR_DUP_MIN} to {NEAR_DUP_MAX}")
        self.threshold = near_threshold
        self._exact: dict[bytes, int] = {}
        self._signatures: dict[int, Any] = {}
        if near_threshold is not None:
            try:  # numpy and scipy: loaded when near duplicates are on
                from datasketch import MinHash, MinHashLSH
            except ImportError:
                raise ConfigError("near duplicates are found with datasketch: pip install datasketch==2.0.0 (or "
                                  "turn them off: --no-near-dups)") from None

            self._empty = MinHash(num_perm=NUM_PERM)
            self._lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM, hashfunc=_band_digest)

    def check(self, example: Example) -> tuple[Drop, int] | None:
        """(exact or near duplicate, the first one's line), or None after remembering the example."""
        digest = hashlib.blake2b(json.dumps(example.turns, ensure_ascii=False).encode(), digest_size=16).digest()
        first = self._exact.get(digest)
        if first is not None:
            return Drop.exact_duplicate, first
        signature = None
        if self.threshold is not None:
            signature = self._signature(example)
            for line in sorted(self._lsh.query(signature)):
                if (signature.hashvalues == self._signatures[line]).mean() >= self.threshold:
                    return Drop.near_duplicate, line
        self._exact[digest] = example.line
        if signature is not None:
            self._lsh.insert(example.line, signature, check_duplication=False)
            self._signatures[example.line] = signature.hashvalues
        return None

    def _signature(self, example: Example) -> Any:
        shingles = list(shingles_of(example))
        m = self._empty.copy()
        for start in range(0, len(shingles), _SHINGLE_BATCH):
            m.update_batch(shingles[start:start + _SHINGLE_BATCH])
        return m


def shingles_of(example: Example) -> set[bytes]:
    """The word SHINGLE_WORDS-grams (lowercased, `\\w+` words) of the user and assistant turns; a text with
    fewer words is one shingle, and one with no words at all its own text."""
    text = "\n".join(t for role, t in example.turns if role != "system").lower()
    words = _WORD.findall(text) or [text]
    return {" ".join(words[i:i + SHINGLE_WORDS]).encode() for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}


def _band_digest(band: bytes) -> bytes:
    """An LSH band's key, 8 bytes instead of 4 x rows (MinHashLSH's `hashfunc`)."""
    return hashlib.blake2b(band, digest_size=8).digest()


# ## Reading a whole file's lines


@dataclass
class Report:
    """What a preparation counted; `as_dict` is stats.json's `counts` and the rest."""

    lines: int = 0
    blank: int = 0
    invalid: int = 0
    converted: int = 0
    cleaned: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    ignored_keys: Counter[str] = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)
    #: (kind, duplicate's line, first's line)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.lines - self.blank - self.invalid

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": {"lines": self.lines, "blank": self.blank, "invalid": self.invalid, "valid": self.valid,
                       "from_prompt_completion": self.converted, "cleaned": self.cleaned,
                       "dropped": {d.value: self.dropped.get(d.value, 0) for d in Drop}},
            "ignored_keys": dict(self.ignored_keys.most_common()),
            "issues": [{"line": i.line, "field": i.field, "message": i.message} for i in self.issues],
            "duplicates": [{"kind": k, "line": d, "first": f} for k, d, f in self.duplicates],
        }


class Preparer:
    """Takes a file's lines one at a time (from `iter_lines`) and keeps the examples worth training on."""

    def __init__(self, near_threshold: float | None):
        self.deduper = Deduper(near_threshold)
        self.report = Report()
        self.examples: list[Example] = []

    def add(self, line: int, raw: bytes | Issue) -> None:
        r = self.report
        r.lines += 1
        if isinstance(raw, bytes) and not raw.strip():
            r.blank += 1
            return
        parsed = parse_line(raw, line) if isinstance(raw, bytes) else [raw]
        if isinstance(parsed, list):
            r.invalid += 1
            r.issues += parsed[:max(0, ISSUES_KEPT - len(r.issues))]
            return
        for key in parsed.ignored:
            if key in r.ignored_keys or len(r.ignored_keys) < IGNORED_KEYS_KEPT:
                r.ignored_keys[key] += 1
        r.converted += parsed.converted
        cleaned = clean(parsed)
        if isinstance(cleaned, Drop):
            r.dropped[cleaned] += 1
            return
        r.cleaned += cleaned is not parsed
        seen = self.deduper.check(cleaned)
        if seen is not None:
            kind, first = seen
            r.dropped[kind] += 1
            if len(r.duplicates) < DUPLICATES_KEPT:
                r.duplicates.append((kind.value, line, first))
            return
        self.examples.append(cleaned)


# ## Split and output


def split(n: int, train_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indexes of n examples, each in ascending order: a seeded shuffle (Python's `random`)
    cut at n * train_ratio, rounded half up. The training side gets at least one example, and with two or more
    and a ratio under 1 the held-out side does too."""
    if not 0 < train_ratio <= 1:
        raise ValueError("train_ratio must be above 0 and at most 1")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = min(n - math.floor(n * train_ratio + 0.5), n - 1) if n else 0
    if n >= 2 and train_ratio < 1:
        held = max(held, 1)
    return sorted(order[held:]), sorted(order[:held])


def custom_id(held_out: bool, k: int) -> str:
    """The k-th (from 1) example's id in its split: `train-000001`, `eval-000001`."""
    return f"{EVAL_PREFIX if held_out else TRAIN_PREFIX}{k:06d}"


def output_line(cid: str, example: Example) -> str:
    """One line of train.jsonl / eval.jsonl (no newline): a staged Item's fields, nothing else."""
    return json.dumps({"custom_id": cid, "messages": example.messages()}, ensure_ascii=False)


# ## Token statistics


class TokenStats(BaseModel):
    """A split's token counts, as the model's tokenizer and chat template measured them."""

    examples: int
    tokens: int
    assistant_tokens: int
    min: int
    mean: float
    p50: int
    p95: int
    max: int

    @classmethod
    def of(cls, tokens: list[int], assistant: list[int]) -> TokenStats:
        """From each example's token count and assistant token count (nearest-rank percentiles)."""
        if not tokens:
            return cls(examples=0, tokens=0, assistant_tokens=0, min=0, mean=0, p50=0, p95=0, max=0)
        ranked = sorted(tokens)
        return cls(examples=len(tokens), tokens=sum(tokens), assistant_tokens=sum(assistant), min=ranked[0],
                   mean=round(sum(tokens) / len(tokens), 1), p50=_rank(ranked, 0.50), p95=_rank(ranked, 0.95),
                   max=ranked[-1])


def _rank(ranked: list[int], q: float) -> int:
    """The nearest-rank q-quantile of an ascending list."""
    return ranked[max(0, math.ceil(len(ranked) * q) - 1)]
