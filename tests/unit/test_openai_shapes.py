"""OpenAI's Files and Batches shapes, pure: the Batch object from a job record, uploaded lines checked one
by one, and the incremental multipart and line readers of POST /v1/files (any chunking gives the same)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shared.contracts.errors import InputError
from shared.contracts.files import FileRecord
from shared.contracts.models import Item, JobOptions, JobRecord, JobStatus, Rejection, Summary
from shared.contracts.openai_files import (
    BATCH_KEY,
    batch_fields,
    batch_object,
    batch_status,
    check_lines,
    file_object,
    metadata_problem,
    new_batch_id,
    parse_result_file_id,
    rejection_line,
    result_file_id,
    result_file_object,
)
from shared.contracts.prepare import Limits, RequestBuilder
from shared.server.api.uploads import (
    LineSplitter,
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def job(status: JobStatus = JobStatus.queued, **kw) -> JobRecord:
    fields = batch_fields(input_file_id="file-abc", endpoint="/v1/chat/completions", completion_window="24h",
                          metadata={"project": "essays"}, model="my-model")
    return JobRecord(id="batch_1", status=status, total=4, created_at=T0, metadata=fields, **kw)


# ## The Batch object


def test_file_ids_of_a_batch_round_trip():
    bid = new_batch_id()
    assert bid.startswith("batch_") and len(bid) == 30
    assert parse_result_file_id(result_file_id(bid, "output")) == ("output", bid)
    assert parse_result_file_id(result_file_id(bid, "error")) == ("error", bid)
    assert parse_result_file_id("file-0123456789abcdef01234567") is None
    assert parse_result_file_id("file-out-") is None
    assert list(job().metadata) == [BATCH_KEY] == ["_openai_batch"]  # the one reserved key


@pytest.mark.parametrize(("record", "status"), [
    (dict(status=JobStatus.queued), "validating"),
    (dict(status=JobStatus.queued, started_at=T0), "in_progress"),  # waiting to run again
    (dict(status=JobStatus.running, started_at=T0, completed=1), "in_progress"),
    (dict(status=JobStatus.running, started_at=T0, completed=3, failed=1), "finalizing"),
    (dict(status=JobStatus.completed, finished_at=T0), "completed"),
    (dict(status=JobStatus.failed, finished_at=T0), "failed"),
    (dict(status=JobStatus.cancelled, finished_at=T0), "cancelled"),
])
def test_batch_status_follows_the_job(record, status):
    assert batch_status(job(**record)) == status


def test_a_cancel_asked_for_shows_cancelling_until_the_job_ends():
    running = job(JobStatus.running, started_at=T0)
    assert batch_object(running, cancelling_at=123).status == "cancelling"
    assert batch_object(running, cancelling_at=123).cancelling_at == 123
    ended = batch_object(job(JobStatus.cancelled, started_at=T0, finished_at=T0), cancelling_at=123)
    assert ended.status == "cancelled" and ended.cancelled_at == int(T0.timestamp()) and ended.cancelling_at == 123
    assert batch_object(job(JobStatus.completed, finished_at=T0), cancelling_at=123).cancelling_at is None


def test_batch_object_of_a_completed_job():
    done = T0 + timedelta(seconds=90)
    b = batch_object(job(JobStatus.completed, completed=3, failed=1, started_at=T0 + timedelta(seconds=2),
                         finished_at=done, summary=Summary.empty(4), prompt_tokens=20, completion_tokens=8))
    doc = b.model_dump(mode="json")
    assert doc["object"] == "batch" and doc["id"] == "batch_1"
    assert doc["endpoint"] == "/v1/chat/completions" and doc["input_file_id"] == "file-abc"
    assert doc["completion_window"] == "24h" and doc["metadata"] == {"project": "essays"}
    assert doc["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    assert doc["output_file_id"] == "file-out-batch_1" and doc["error_file_id"] == "file-err-batch_1"
    assert doc["created_at"] == int(T0.timestamp()) and doc["in_progress_at"] == int(T0.timestamp()) + 2
    assert doc["completed_at"] == int(done.timestamp()) and doc["failed_at"] is None
    assert doc["expires_at"] == int(T0.timestamp()) + 24 * 3600
    assert doc["model"] == "my-model" and doc["errors"] is None
    assert doc["usage"]["input_tokens"] == 20 and doc["usage"]["total_tokens"] == 28


def test_batch_object_of_a_failed_job_names_the_reason_and_has_no_output_file():
    b = batch_object(job(JobStatus.failed, failed=2, finished_at=T0, error="engine died"))
    assert b.status == "failed" and b.failed_at == int(T0.timestamp())
    assert b.output_file_id is None and b.error_file_id == "file-err-batch_1"
    assert b.errors is not None and b.errors.data[0].message == "engine died"


def test_the_openai_client_reads_our_shapes():
    openai = pytest.importorskip("openai")
    b = openai.types.Batch.model_validate(batch_object(job(JobStatus.running, started_at=T0)).model_dump(mode="json"))
    assert b.status == "in_progress" and b.request_counts.total == 4
    rec = FileRecord(id="file-1", filename="in.jsonl", bytes=10, lines=2, status="processed", created_at=T0)
    f = openai.types.FileObject.model_validate(file_object(rec).model_dump(mode="json"))
    assert f.id == "file-1" and f.bytes == 10 and f.created_at == int(T0.timestamp()) and f.status == "processed"
    out = result_file_object(job(JobStatus.completed, finished_at=T0), "output")
    assert openai.types.FileObject.model_validate(out.model_dump()).purpose == "batch_output"
    assert result_file_object(job(JobStatus.running), "error").status == "uploaded"


def test_metadata_within_openais_limits():
    assert metadata_problem(None) is None and metadata_problem({"a": "b"}) is None
    assert "16" in metadata_problem({str(i): "v" for i in range(17)})
    assert "64" in metadata_problem({"k" * 65: "v"})
    assert "512" in metadata_problem({"k": "v" * 513})


# ## Uploaded lines

BUILDER = RequestBuilder(JobOptions(), Limits(max_prompt_chars=1000), any_model=True)


def line(custom_id="a", content="Hi", **body) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "m", "messages": [{"role": "user", "content": content}], **body}}).encode()


def check(rows, seen=None, start=0):
    return check_lines(rows, start_idx=start, builder=BUILDER, seen={} if seen is None else seen, max_line_bytes=4096)


def test_good_lines_are_items_and_bad_ones_rejections_naming_line_and_field():
    rows = check([
        (1, line("a")),
        (2, b'{"custom_id": "b", "prompt": "plain item"}'),
        (3, b'{"custom_id": "c", "fields": {"essay": "x"}}'),  # its template comes with the job
        (5, line("d", temperature=7)),
        (6, b'{"custom_id": "e", "prompt": "x", "messages": []}'),
        (7, b'{"custom_id": "f", oops'),
        (8, b'{"custom_id": "g", "prompt": "\xff\xfe"}'),
        (9, None),
        (10, line("h", content="x" * 2000)),
        (11, b'{"prompt": "no id"}'),
        (12, b"[1, 2]"),
    ], start=10)
    assert [type(r).__name__ for r in rows] == ["Item", "Item", "Item", "Rejection", "Rejection", "Rejection",
                                                 "Rejection", "Rejection", "Rejection", "Item", "Rejection"]
    by_id = {r.custom_id: r for r in rows}
    assert isinstance(by_id["a"], Item) and by_id["a"].url == "/v1/chat/completions"
    bad = by_id["d"]
    assert bad.line == 5 and bad.field == "body.temperature" and bad.index == 13
    assert by_id["e"].line == 6
    syntax = by_id["item-15"]  # not JSON: no custom_id to keep
    assert syntax.line == 7 and "not valid JSON" in syntax.message
    assert by_id["item-16"].line == 8 and "UTF-8" in by_id["item-16"].message  # the id is inside the bad line
    assert by_id["item-17"].line == 9 and "4096 bytes" in by_id["item-17"].message
    assert by_id["h"].field == "body.messages" and "over the limit" in by_id["h"].message
    assert by_id["item-19"].prompt == "no id"
    assert by_id["item-20"].line == 12 and "JSON object" in by_id["item-20"].message
    assert by_id["d"].describe().startswith("line 5, field 'body.temperature'")
    assert rejection_line(bad) == {"custom_id": "d", "error": {"code": "invalid_item", "message": bad.message,
                                                              "line": 5, "field": "body.temperature"}}


def test_a_repeated_custom_id_refuses_the_file_naming_both_lines_across_batches():
    seen: dict[str, int] = {}
    check([(1, line("a")), (2, line("b"))], seen)
    with pytest.raises(InputError) as e:
        check([(3, line("c")), (4, b'{"custom_id": "a", "prompt": "again"}')], seen, start=2)
    issue = e.value.issues[0]
    assert issue.line == 4 and issue.field == "custom_id" and "repeats line 1" in issue.message
    assert str(issue).startswith("line 4, field 'custom_id': custom_id 'a' repeats line 1")


def test_a_refused_line_keeps_its_custom_id_for_the_error_file():
    (r,) = check([(4, line("keep-me", max_tokens=0))])
    assert isinstance(r, Rejection) and r.custom_id == "keep-me" and r.field == "body.max_tokens"


def test_validation_past_its_deadline_is_refused():
    with pytest.raises(InputError, match="too long"):
        check_lines([(1, line("a"))], start_idx=0, builder=BUILDER, seen={}, max_line_bytes=4096, deadline=0.0)


# ## multipart/form-data and lines, whatever the chunking


def multipart(content: bytes, **fields) -> tuple[str, bytes]:
    req = httpx.Request("POST", "http://api.test/v1/files", data=fields or {"purpose": "batch"},
                        files={"file": ("dir/in put.jsonl", content, "application/jsonl")})
    return req.headers["content-type"], req.read()


def read_all(reader: MultipartReader, body: bytes, size: int) -> list:
    events = []
    for i in range(0, len(body), size):
        events += reader.feed(body[i:i + size])
    reader.finish()
    merged: list = []
    for ev in events:  # data pieces depend on the chunking: join them
        if isinstance(ev, PartData) and merged and isinstance(merged[-1], PartData):
            merged[-1] = PartData(merged[-1].data + ev.data)
        else:
            merged.append(ev)
    return merged


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 64, 1000, 10**6])
def test_multipart_reader_gives_the_same_parts_for_any_chunking(size):
    # data that looks like a boundary but is not one, CRLFs and dashes at the edges
    content = b"--\r\n" + line("a") + b"\r\n--not-the-boundary\r\n" + b"\r\n--" + b"x" * 300 + b"--\r\n"
    ctype, body = multipart(content)
    events = read_all(MultipartReader(boundary_of(ctype)), body, size)
    assert events == [PartStart("purpose", None, None), PartData(b"batch"), PartEnd(),
                      PartStart("file", "in put.jsonl", "application/jsonl"), PartData(content), PartEnd()]


def test_multipart_reader_refuses_what_is_not_multipart():
    with pytest.raises(MultipartError):
        boundary_of("application/json")
    with pytest.raises(MultipartError):
        boundary_of("multipart/form-data")
    assert boundary_of('multipart/form-data; boundary="abc def"') == b"abc def"
    ctype, body = multipart(b"x\n")
    reader = MultipartReader(boundary_of(ctype))
    reader.feed(body[:-10])
    with pytest.raises(MultipartError, match="closing boundary"):
        reader.finish()
    bad = MultipartReader(b"b")
    with pytest.raises(MultipartError):
        bad.feed(b"--b\r\nno colon here\r\n\r\ndata\r\n--b--\r\n")
    with pytest.raises(MultipartError, match="headers are over"):
        MultipartReader(b"b").feed(b"--b\r\n" + b"X-A: " + b"a" * 20000)


def test_multipart_reader_reads_an_rfc5987_filename_and_empty_parts():
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename*=utf-8''na%C3%AFve.jsonl\r\n\r\n"
            b"\r\n--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b--\r\nepilogue")
    events = read_all(MultipartReader(b"b"), body, 7)
    assert events == [PartStart("file", "naïve.jsonl", None), PartEnd(), PartStart("purpose", None, None),
                      PartData(b"batch"), PartEnd()]


@pytest.mark.parametrize("size", [1, 3, 8, 1000])
def test_line_splitter_numbers_lines_and_never_keeps_a_long_one(size):
    data = b"\xef\xbb\xbffirst\r\n\nthird\n" + b"y" * 50 + b"\nlast-no-newline"
    splitter = LineSplitter(max_line_bytes=20)
    out = []
    for i in range(0, len(data), size):
        out += splitter.feed(data[i:i + size])
        assert len(splitter._partial) <= 20
    out += splitter.finish()
    assert out == [(1, b"first"), (2, b""), (3, b"third"), (4, None), (5, b"last-no-newline")]
