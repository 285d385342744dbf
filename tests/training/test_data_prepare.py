"""`llm-jobs data prepare` (shared/cli/data.py over shared/contracts/train_data.py): bad lines named by line and
field, prompt/completion turned into chats, cleaning, exact and near duplicates, the seeded split, token
statistics from the embedded model's real tokenizer, the truncation warning and --force. Real files, no mocks."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.cli.common import EXIT_INVALID_INPUT
from shared.contracts.models import Item
from shared.contracts.train_data import (
    Deduper,
    Drop,
    Example,
    Preparer,
    clean_text,
    iter_lines,
    parse_line,
    split,
)
from shared.contracts.training import example_issues

runner = CliRunner()
_rng = random.Random(3)
VOCAB = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "nrstlm"]


def words(n: int) -> str:
    return " ".join(_rng.choice(VOCAB) for _ in range(n))


def chat(user: str, assistant: str, system: str | None = None) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def write_lines(path: Path, rows: list) -> Path:
    """Each row as a JSONL line: bytes and str as they are, anything else as JSON."""
    with path.open("wb") as f:
        for row in rows:
            raw = row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode()
            f.write(raw + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def prepare(model_dir, tmp_path):
    """Runs `llm-jobs data prepare IN -o tmp/out [args]` with the embedded model's tokenizer."""

    def go(source: Path, *args: str, out: Path | None = None):
        out = out or tmp_path / "out"
        result = runner.invoke(app, ["data", "prepare", str(source), "-o", str(out), "--model", str(model_dir),
                                     *args])
        result.text = " ".join(result.output.split())  # rich wraps at 80 columns here
        return result

    return go


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


# ## Bad lines


BAD_LINES: list[tuple[bytes | str | dict | list, str, str]] = [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}, "messages.1.role",
     "'system', 'user' or 'assistant'"),
    ('{"prompt": "x", "completion": "y"', "", "not valid JSON"),
    (b'{"prompt": "caf\xe9", "completion": "y"}', "prompt", "not UTF-8"),
    ('{"messages": ' + "[" * 100 + "]" * 100 + "}", "messages", "nested deeper"),
    ({"prompt": 5, "completion": "y"}, "prompt", "must be a string"),
    ({"prompt": "x"}, "completion", "missing"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "last turn must be the assistant's"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages", "needs a user turn"),
    ({"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "x"}]}, "messages.0.content",
     "a string or a list of text parts"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "text": "x"}]},
                   {"role": "assistant", "content": "x"}]}, "messages.0.content.0.type", "'text'"),
    ({"messages": [{"role": "user", "content": "x", "[red]k": 1}, {"role": "assistant", "content": "x"}]},
     "messages.0.'[red]k'", "unknown key"),
    ({"messages": [], "x": 1}, "messages", "non-empty list"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "prompt": "z"},
     "prompt", "not both"),
    ('{"prompt": "x", "completion": "y", "n": ' + "1" * 5000 + "}", "", "not valid JSON"),
    ([1, 2], "", "must be a JSON object"),
    ({"text": "no chat here"}, "", "needs 'messages', or 'prompt' and 'completion'"),
]


@pytest.mark.parametrize(("row", "field", "message"), BAD_LINES, ids=[f"bad{i}" for i in range(len(BAD_LINES))])
def test_a_bad_line_names_its_line_and_field(row, field, message):
    raw = row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode()
    issues = parse_line(raw, 12)
    assert isinstance(issues, list) and issues, issues
    assert issues[0].line == 12
    assert issues[0].field == field
    assert message in issues[0].message
    assert issues[0].where() == (f"line 12, field '{field}'" if field else "line 12")


def test_bad_lines_are_reported_and_the_good_ones_still_go_through(prepare, tmp_path):
    rows = [chat("Hello there", "General Kenobi"), *[row for row, _, _ in BAD_LINES], "",
            {"prompt": "What is 2+2?", "completion": "4", "id": 9, "source": "math"}]
    source = write_lines(tmp_path / "in.jsonl", rows)
    r = prepare(source)
    assert r.exit_code == 0, r.output
    assert "line 2, field 'messages.1.role'" in r.text
    assert "line 12, field 'messages.0.'[red]k''" in r.text  # a key from the input is quoted, never rich markup
    s = stats_of(tmp_path / "out")
    assert s["counts"] | {"dropped": None} == {
        "lines": len(rows), "blank": 1, "invalid": len(BAD_LINES), "valid": 2, "from_prompt_completion": 1,
        "cleaned": 0, "dropped": None, "kept": 2, "train": 1, "eval": 1}
    assert {(i["line"], i["field"]) for i in s["issues"]} == {
        (n, field) for n, (_, field, _) in enumerate(BAD_LINES, start=2)}
    assert s["ignored_keys"] == {"id": 1, "source": 1}


def test_strict_writes_nothing_when_a_line_is_bad(prepare, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [chat("a", "b"), chat("c", "d"), "{oops"])
    r = prepare(source, "--strict")
    assert r.exit_code == EXIT_INVALID_INPUT
    assert "line 3" in r.text and "--strict" in r.text
    assert not (tmp_path / "out").exists()


def test_no_valid_line_exits_2(prepare, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", ["{oops", {"prompt": "x"}, {"prompt": "x", "completion": " \x00 "}])
    r = prepare(source)
    assert r.exit_code == EXIT_INVALID_INPUT
    assert "no valid example" in r.text
    assert not (tmp_path / "out").exists()


def test_a_line_over_the_cap_is_skipped_whole():
    stream = io.BytesIO(b'{"a": 1}\n' + b"x" * 100 + b"\n" + b'{"b": 2}\r\n' + b"y" * 50)
    got = list(iter_lines(stream, limit=40))
    assert [n for n, _ in got] == [1, 2, 3, 4]
    assert got[0][1] == b'{"a": 1}' and got[2][1] == b'{"b": 2}'
    assert "longer than 40 bytes" in got[1][1].message and got[1][1].line == 2
    assert "longer than 40 bytes" in got[3][1].message


# ## Conversion and cleaning


def test_prompt_completion_becomes_a_chat_and_every_turn_is_cleaned(prepare, tmp_path):
    rows = [{"prompt": "  Caf\u0065\u0301?\r\nYes\x07 ", "completion": "\tIt is\r\nopen.\u200b\x1b[31m ",
             "system": "Be brief.", "custom_id": "p-1"},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "Two "},
                                                       {"type": "text", "text": "parts"}]},
                          {"role": "assistant", "content": "ok", "name": "bot"}]},
            {"prompt": "empty answer", "completion": " \x00\r\n "},
            {"messages": [{"role": "system", "content": "\x01"}, {"role": "user", "content": "u"},
                          {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "user", "content": "\t"}, {"role": "assistant", "content": "a"}]},
            {"prompt": "lone surrogate \ud800 here", "completion": "fine", "system": None}]
    source = write_lines(tmp_path / "in.jsonl", rows)
    r = prepare(source, "--train-ratio", "1")
    assert r.exit_code == 0, r.output
    lines = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert read_jsonl(tmp_path / "out" / "eval.jsonl") == []
    assert lines[0] == {"custom_id": "train-000001", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Caf\u00e9?\nYes"},
        {"role": "assistant", "content": "It is\nopen.\u200b[31m"}]}
    assert lines[1]["messages"] == [{"role": "user", "content": "Two parts"}, {"role": "assistant", "content": "ok"}]
    assert lines[2]["messages"] == [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    assert lines[3]["messages"][0] == {"role": "user", "content": "lone surrogate  here"}
    for line in lines:  # a training job's items, as they are
        assert example_issues(Item.model_validate(line)) is None
    s = stats_of(tmp_path / "out")
    assert s["counts"]["dropped"] == {"empty_assistant": 1, "empty_turn": 1, "exact_duplicate": 0,
                                      "near_duplicate": 0}
    assert s["counts"]["from_prompt_completion"] == 3 and s["counts"]["cleaned"] == 3
    assert s["ignored_keys"] == {"messages.*.name": 1}


def test_clean_text():
    assert clean_text(" a\r\nb\rc\x00\x7f\x85\td\n ") == "a\nb\nc\td"
    assert clean_text("n\u0303") == "\u00f1"


# ## Duplicates


def test_exact_and_near_duplicates_are_dropped_and_a_different_answer_is_kept(prepare, tmp_path):
    question, answer = words(30), words(200)
    tweaked = answer.split()
    tweaked[100] = "changed"
    rows = [chat(question, answer),
            chat(question, answer),                           # exact
            chat(f"  {question}\r\n", answer),                # exact once cleaned
            chat(question, " ".join(tweaked)),                # near: one word of 230 changed
            chat(question, answer.upper()),                   # near: the same words (case is not a difference)
            chat(question, words(200)),                       # same question, another answer: kept
            chat(words(30), answer, system="a system prompt is not compared")]  # kept: the question differs
    source = write_lines(tmp_path / "in.jsonl", rows)
    r = prepare(source, "--train-ratio", "1")
    assert r.exit_code == 0, r.output
    s = stats_of(tmp_path / "out")
    assert s["counts"]["dropped"] == {"empty_assistant": 0, "empty_turn": 0, "exact_duplicate": 2,
                                      "near_duplicate": 2}
    assert s["duplicates"] == [{"kind": "exact_duplicate", "line": 2, "first": 1},
                               {"kind": "exact_duplicate", "line": 3, "first": 1},
                               {"kind": "near_duplicate", "line": 4, "first": 1},
                               {"kind": "near_duplicate", "line": 5, "first": 1}]
    assert [line["messages"][-1]["content"] for line in read_jsonl(tmp_path / "out" / "train.jsonl")] == [
        answer, rows[5]["messages"][-1]["content"], answer]

    r = prepare(source, "--train-ratio", "1", "--no-near-dups", "--force")
    assert r.exit_code == 0, r.output
    assert stats_of(tmp_path / "out")["counts"]["dropped"]["near_duplicate"] == 0
    assert stats_of(tmp_path / "out")["counts"]["kept"] == 5


def test_the_threshold_decides_what_is_near():
    def ex(line: int, answer: str) -> Example:
        return Example(line, (("user", "q"), ("assistant", answer)))

    base = words(100).split()
    close = base[:94] + words(6).split()  # about 0.85 of the word shingles shared
    loose, tight = Deduper(0.6), Deduper(0.9)
    for d in (loose, tight):
        assert d.check(ex(1, " ".join(base))) is None
    assert tight.check(ex(2, " ".join(close))) is None
    assert loose.check(ex(2, " ".join(close))) == (Drop.near_duplicate, 1)
    assert loose.check(ex(3, words(100))) is None
    with pytest.raises(ValueError, match="threshold"):
        Deduper(0.99)


# ## Split


def test_split_ratio_and_seed():
    train, held = split(50, 0.8, 42)
    assert (len(train), len(held)) == (40, 10)
    assert sorted(train + held) == list(range(50)) and train == sorted(train)
    assert split(50, 0.8, 42) == (train, held)
    assert split(50, 0.8, 7) != (train, held)
    assert split(2, 0.9, 1)[1] != [] and split(2, 0.9, 1)[0] != []  # each side gets one
    assert split(3, 0.01, 1)[0] != []
    assert split(1, 0.5, 1) == ([0], [])
    assert split(10, 1.0, 1) == (list(range(10)), [])


def test_the_cli_split_is_deterministic_by_seed(prepare, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [chat(f"question {i} {words(3)}", f"answer {i}") for i in range(40)])
    outs = {}
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        r = prepare(source, "--train-ratio", "0.75", "--seed", seed, out=tmp_path / name)
        assert r.exit_code == 0, r.output
        outs[name] = {f: (tmp_path / name / f).read_text() for f in ("train.jsonl", "eval.jsonl")}
    assert outs["a"] == outs["b"]
    assert outs["a"]["eval.jsonl"] != outs["c"]["eval.jsonl"]
    train, held = (read_jsonl(tmp_path / "a" / f) for f in ("train.jsonl", "eval.jsonl"))
    assert (len(train), len(held)) == (30, 10)
    assert [x["custom_id"] for x in held] == [f"eval-{k:06d}" for k in range(1, 11)]
    assert [x["custom_id"] for x in train][:2] == ["train-000001", "train-000002"]


# ## Tokens


def test_token_stats_are_the_tokenizers_own_counts(prepare, model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    rows = [chat("What is the capital of France?", "Paris.", system="Answer in one word."),
            chat("Name three colours, please.", "Red, green and blue are three colours.")]
    source = write_lines(tmp_path / "in.jsonl", rows)
    r = prepare(source, "--train-ratio", "1")
    assert r.exit_code == 0, r.output
    full = [len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
            for row in rows]
    prompt = [len(tokenizer.apply_chat_template(row["messages"][:-1], tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"]) for row in rows]
    t = stats_of(tmp_path / "out")["tokens"]["train"]
    assert t["examples"] == 2
    assert t["tokens"] == sum(full)
    assert t["assistant_tokens"] == sum(f - p for f, p in zip(full, prompt, strict=True))
    assert (t["min"], t["max"], t["p50"], t["p95"]) == (min(full), max(full), min(full), max(full))
    assert t["mean"] == round(sum(full) / 2, 1)
    assert stats_of(tmp_path / "out")["tokens"]["eval"]["examples"] == 0
    assert f"{sum(full)}" in r.text  # the table


def test_examples_over_max_seq_len_are_warned_about(prepare, tmp_path):
    rows = [chat("short", "ok"), chat(words(60), words(10)), chat("hi", words(80))]
    source = write_lines(tmp_path / "in.jsonl", rows)
    r = prepare(source, "--train-ratio", "1", "--max-seq-len", "48")
    assert r.exit_code == 0, r.output
    assert "2 example(s) are longer than --max-seq-len 48 tokens" in r.text
    assert "1 of them keep no assistant token" in r.text  # the 60-word question alone fills 48 tokens
    assert "train-000002 (line 2," in r.text and "train-000003 (line 3," in r.text
    over = stats_of(tmp_path / "out")["over_max_seq_len"]
    assert over["count"] == 2 and over["no_assistant_tokens_left"] == 1
    assert [e["custom_id"] for e in over["examples"]] == ["train-000002", "train-000003"]


# ## Output


def test_existing_outputs_need_force(prepare, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [chat("a", "b"), chat("c", "d")])
    assert prepare(source).exit_code == 0
    (tmp_path / "out" / "train.jsonl").write_text("keep me\n")
    r = prepare(source)
    assert r.exit_code == EXIT_INVALID_INPUT
    assert "--force" in r.text
    assert (tmp_path / "out" / "train.jsonl").read_text() == "keep me\n"
    r = prepare(source, "--force")
    assert r.exit_code == 0, r.output
    assert len(read_jsonl(tmp_path / "out" / "train.jsonl")) + len(read_jsonl(tmp_path / "out" / "eval.jsonl")) == 2
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_the_preparer_counts_ignored_keys_safely():
    p = Preparer(None)
    for n, key in enumerate(["id", "id", "\x1b[2J", "x" * 500], start=1):
        p.add(n, json.dumps({"prompt": f"p{n}", "completion": "c", key: 1}).encode())
    assert dict(p.report.ignored_keys) == {"id": 2, repr("\x1b[2J"): 1, repr("x" * 40): 1}
    assert len(p.examples) == 4
