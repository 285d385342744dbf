"""POST /v1/files: a multipart upload read as it arrives, never whole in memory, nor on disk.

    record = await receive_file(request, store=..., settings=..., limits=..., slots=..., owner=...)

The body is parsed incrementally (`MultipartReader`, a small multipart/form-data parser of our own: the
API needs no python-multipart), and the `file` part is cut into lines (`LineSplitter`) as its bytes
come. Non-blank lines gather into batches of STAGE_BATCH_ITEMS lines (or `BATCH_BYTES` bytes); each
batch is checked in a worker thread (`check_lines`, shared/contracts/openai_files.py), within the API's
validation slots (VALIDATION_CONCURRENCY, shared/server/api/intake.py) and VALIDATION_TIMEOUT_S a
batch, then staged in the store (`Store.stage_file_lines`) before more of the body is read: uvicorn
stops reading the socket meanwhile, so what this holds is one batch and one chunk.

Limits: the file's bytes (MAX_UPLOAD_BYTES: 413), its non-blank lines (MAX_ITEMS_PER_JOB: 400), one
line (MAX_BODY_BYTES: longer lines are refused lines, their bytes skipped, never buffered), the other
form fields (4 KiB each, 32 of them). A custom_id used twice refuses the file (400 naming both lines).
A refused upload's record is kept with status `error` and the reason. After a refusal the rest of the
body is read and dropped (up to twice the limit), so the client gets the answer rather than a reset
connection.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from anyio import CapacityLimiter, to_thread
from starlette.requests import ClientDisconnect, Request

from shared.contracts.errors import InputError
from shared.contracts.files import FileRecord, new_file_id
from shared.contracts.models import JobOptions, Rejection
from shared.contracts.openai_files import RawLine, check_lines
from shared.contracts.prepare import Limits, RequestBuilder
from shared.contracts.settings import Settings
from shared.stores.base import Store, retrying

#: bytes of lines checked and staged at once, at most (and STAGE_BATCH_ITEMS lines)
BATCH_BYTES = 8 * 1024 * 1024
#: a form field other than `file` (`purpose`, `expires_after[...]`), and how many of them
FIELD_MAX_BYTES, MAX_FIELDS = 4096, 32
#: the part headers of one field
HEADERS_MAX_BYTES = 16 * 1024
#: what the rest of a multipart body may add to the file (boundaries, headers, small fields)
BODY_SLACK_BYTES = 1024 * 1024


class UploadRefused(Exception):
    """The upload is refused: an HTTP status and what OpenAI's error body says (`param`, `code`)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


# ## multipart/form-data, incrementally


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data; boundary=...` content type; MultipartError otherwise."""
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/form-data":
        raise MultipartError("send multipart/form-data with the fields `file` and `purpose`")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if 1 <= len(value) <= 200 and value.isascii():
                return value.encode("ascii")
    raise MultipartError("the content type names no multipart boundary")


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd

_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _disposition(value: str) -> dict[str, str]:
    """The parameters of a `form-data; name="file"; filename="a.jsonl"` header (`filename*` decoded)."""
    kind, sep, rest = value.partition(";")
    if kind.strip().lower() != "form-data":
        raise MultipartError(f"a part's Content-Disposition must be form-data, not {kind.strip()[:40]!r}")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(sep + rest):
        key, v = m.group(1).lower(), m.group(2).strip()
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        if key.endswith("*"):  # RFC 5987: utf-8''percent-encoded
            key, v = key[:-1], unquote(v.split("'", 2)[-1], encoding="utf-8", errors="replace")
        params[key] = v
    return params


class MultipartReader:
    """Feed it the body's chunks; it answers events: a part begins (its name), a piece of its data, it ends.
    Whatever the chunking, it holds at most a chunk and a boundary's length (a part's headers: 16 KiB)."""

    def __init__(self, boundary: bytes):
        self._delim = b"\r\n--" + boundary
        self._buf = bytearray(b"\r\n")  # the first boundary has no line break before it
        self._state = "preamble"

    @property
    def done(self) -> bool:
        """The closing boundary was read."""
        return self._state == "epilogue"

    def feed(self, data: bytes) -> list[Event]:
        if self._state == "epilogue":
            return []
        self._buf += data
        out: list[Event] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> None:
        if self._state != "epilogue":
            raise MultipartError("the multipart body ended before its closing boundary")

    def _step(self, out: list[Event]) -> bool:
        buf, delim = self._buf, self._delim
        match self._state:
            case "preamble" | "body":
                at = buf.find(delim)
                if at < 0:
                    keep = len(delim) - 1  # a boundary may be cut by the chunking: keep what could start one
                    if len(buf) > keep:
                        if self._state == "body":
                            out.append(PartData(bytes(buf[:-keep])))
                        del buf[:-keep]
                    return False
                if self._state == "body":
                    if at:
                        out.append(PartData(bytes(buf[:at])))
                    out.append(PartEnd())
                del buf[:at + len(delim)]
                self._state = "after"
                return True
            case "after":
                if len(buf) < 2:
                    return False
                if buf[:2] == b"--":
                    self._state = "epilogue"
                    buf.clear()
                    return False
                eol = buf.find(b"\r\n")
                if eol < 0 or buf[:eol].strip(b" \t"):
                    if eol >= 0 or len(buf) > 1024:
                        raise MultipartError("a multipart boundary line is malformed")
                    return False
                del buf[:eol + 2]
                self._state = "headers"
                return True
            case "headers":
                if buf.startswith(b"\r\n"):
                    block, size = b"", 2
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > HEADERS_MAX_BYTES:
                            raise MultipartError(f"a part's headers are over {HEADERS_MAX_BYTES} bytes")
                        return False
                    block, size = bytes(buf[:end]), end + 4
                del buf[:size]
                out.append(self._part(block))
                self._state = "body"
                return True
        return False

    @staticmethod
    def _part(block: bytes) -> PartStart:
        headers: dict[str, str] = {}
        for line in block.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise MultipartError("a part's header line has no ':'")
            headers[name.strip().lower()] = value.strip()
        params = _disposition(headers.get("content-disposition", ""))
        if not params.get("name"):
            raise MultipartError("a part has no Content-Disposition name")
        filename = params.get("filename")
        if filename is not None:
            filename = filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload.jsonl"
        return PartStart(params["name"], filename, headers.get("content-type"))


# ## Lines


class LineSplitter:
    """Cuts a stream of bytes into lines (numbered from 1, with "\\r\\n" or "\\n"). A line longer than
    `max_line_bytes` comes out as None: its bytes are counted, never kept."""

    def __init__(self, max_line_bytes: int):
        self.max_line_bytes = max_line_bytes
        self.line = 0
        self._partial = bytearray()
        self._too_long = False

    def feed(self, data: bytes) -> list[RawLine]:
        out: list[RawLine] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data, start, len(data))
                return out
            if not self._partial and not self._too_long and nl - start <= self.max_line_bytes:
                out.append(self._line(data[start:nl]))  # the usual case: a whole line inside the chunk
            else:
                self._append(data, start, nl)
                out.append(self._take())
            start = nl + 1

    def finish(self) -> list[RawLine]:
        """The last line, when the file does not end with a line break."""
        return [self._take()] if self._partial or self._too_long else []

    def _append(self, data: bytes, start: int, end: int) -> None:
        if self._too_long or end <= start:
            return
        if len(self._partial) + (end - start) > self.max_line_bytes:
            self._too_long = True
            self._partial.clear()
        else:
            self._partial += data[start:end]

    def _take(self) -> RawLine:
        if self._too_long:
            self._too_long = False
            self.line += 1
            return self.line, None
        raw = bytes(self._partial)
        self._partial.clear()
        return self._line(raw)

    def _line(self, raw: bytes) -> RawLine:
        self.line += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte order mark
            raw = raw[3:]
        if len(raw) > self.max_line_bytes:
            return self.line, None
        return self.line, raw


# ## The upload


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_bytes: int
    max_lines: int
    batch_lines: int
    batch_bytes: int
    max_line_bytes: int
    timeout_s: float | None
    store_retry_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> UploadLimits:
        return cls(s.max_upload_bytes, s.max_items_per_job, s.stage_batch_items, BATCH_BYTES, s.max_body_bytes,
                   s.validation_timeout_s, s.store_retry_s)


class _Upload:
    """One upload in progress: the form fields so far, the file's record, its lines staged so far."""

    def __init__(self, store: Store, limits: UploadLimits, builder: RequestBuilder, slots: CapacityLimiter,
                 owner: str | None):
        self.store, self.limits, self.builder, self.slots, self.owner = store, limits, builder, slots, owner
        self.fields: dict[str, bytearray] = {}
        self.part: PartStart | None = None
        self.record: FileRecord | None = None
        self.splitter = LineSplitter(limits.max_line_bytes)
        self.file_done = False
        self.bytes = self.staged = self.rejected = 0
        self.pending: list[RawLine] = []
        self.pending_bytes = 0
        self.seen: dict[str, int] = {}  # custom_id -> line: bounded by MAX_ITEMS_PER_JOB lines

    async def on(self, event: Event) -> None:
        match event:
            case PartStart():
                await self._start(event)
            case PartData(data) if self.part is not None and self.part.name == "file":
                await self._file_data(data)
            case PartData(data) if self.part is not None:
                field = self.fields[self.part.name]
                if len(field) + len(data) > FIELD_MAX_BYTES:
                    raise UploadRefused(400, f"the form field {self.part.name!r} is over {FIELD_MAX_BYTES} bytes",
                                        param=self.part.name)
                field += data
            case PartEnd():
                if self.part is not None and self.part.name == "file":
                    for line in self.splitter.finish():
                        await self._line(line)
                    await self._flush()
                    self.file_done = True
                self.part = None

    async def _start(self, part: PartStart) -> None:
        self.part = part
        if part.name == "file":
            if self.record is not None:
                raise UploadRefused(400, "send one `file` field", param="file")
            self._check_purpose(required=False)
            self.record = FileRecord(id=new_file_id(), purpose="batch", filename=part.filename or "upload.jsonl",
                                     owner=self.owner, created_at=datetime.now(UTC))
            await retrying(lambda: self.store.create_file(self.record), within_s=self.limits.store_retry_s)
            return
        if part.name in self.fields or len(self.fields) >= MAX_FIELDS:
            raise UploadRefused(400, f"the form field {part.name!r} is repeated, or there are over {MAX_FIELDS}",
                                param=part.name)
        self.fields[part.name] = bytearray()

    def _check_purpose(self, *, required: bool) -> None:
        purpose = self.fields.get("purpose")
        if purpose is None:
            if required:
                raise UploadRefused(400, "the form field `purpose` is required: send purpose=batch", param="purpose")
            return
        text = purpose.decode("utf-8", "replace").strip()
        if text != "batch":
            raise UploadRefused(400, f"purpose must be 'batch' (files here are Batch API input), not {text[:64]!r}",
                                param="purpose", code="invalid_value")

    async def _file_data(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.bytes > self.limits.max_bytes:
            raise UploadRefused(413, f"the file is over {self.limits.max_bytes} bytes (MAX_UPLOAD_BYTES): split it "
                                     "into smaller files", param="file", code="file_too_large")
        for line in self.splitter.feed(data):
            await self._line(line)

    async def _line(self, line: RawLine) -> None:
        raw = line[1]
        if raw is not None and not raw.strip():
            return  # blank lines are skipped, as in a JSONL job
        if self.staged + len(self.pending) >= self.limits.max_lines:
            raise UploadRefused(400, f"the file has over {self.limits.max_lines} lines (MAX_ITEMS_PER_JOB): split "
                                     "it into smaller files", param="file", code="too_many_lines")
        self.pending.append(line)
        self.pending_bytes += len(raw or b"")
        if len(self.pending) >= self.limits.batch_lines or self.pending_bytes >= self.limits.batch_bytes:
            await self._flush()

    async def _flush(self) -> None:
        if not self.pending or self.record is None:
            return
        lines, self.pending, self.pending_bytes = self.pending, [], 0
        start, timeout = self.staged, self.limits.timeout_s

        def check() -> list[Any]:
            deadline = None if timeout is None else time.monotonic() + timeout
            return check_lines(lines, start_idx=start, builder=self.builder, seen=self.seen,
                               max_line_bytes=self.limits.max_line_bytes, deadline=deadline)

        try:
            rows = await to_thread.run_sync(check, limiter=self.slots)
        except InputError as e:
            issue = e.issues[0]
            raise UploadRefused(400, str(issue), param=issue.field or "file", code="invalid_file") from None
        file_id = self.record.id
        await retrying(lambda: self.store.stage_file_lines(file_id, start, rows), within_s=self.limits.store_retry_s)
        self.staged += len(rows)
        self.rejected += sum(isinstance(r, Rejection) for r in rows)

    async def finish(self) -> FileRecord:
        """Every part was read: the file is processed, or refused."""
        if self.record is None:
            self._check_purpose(required=False)
            raise UploadRefused(400, "the form field `file` is required: the JSONL file to upload", param="file")
        self._check_purpose(required=True)
        if not self.file_done:
            raise UploadRefused(400, "the `file` part did not end", param="file")
        if self.staged == 0:
            raise UploadRefused(400, "the file has no lines: one request per line (JSONL)", param="file",
                                code="invalid_file")
        await self._finish("processed")
        rec = await retrying(lambda: self.store.get_file(self.record.id), within_s=self.limits.store_retry_s)
        return rec or self.record.model_copy(update={"bytes": self.bytes, "lines": self.staged,
                                                     "rejected": self.rejected, "status": "processed"})

    async def _finish(self, status: str, details: str | None = None) -> None:
        assert self.record is not None
        file_id = self.record.id
        await retrying(lambda: self.store.finish_file(file_id, bytes=self.bytes, lines=self.staged,
                                                      rejected=self.rejected, status=status, status_details=details),
                       within_s=self.limits.store_retry_s)

    async def refused(self, reason: str) -> None:
        """Keep the record of a refused upload, status `error` with the reason (best effort: the refusal
        is what the client must get)."""
        if self.record is None:
            return
        try:
            await self._finish("error", reason)
        except Exception:
            pass


async def receive_file(request: Request, *, store: Store, settings: Settings, limits: Limits, slots: CapacityLimiter,
                       owner: str | None, builder: Callable[[], RequestBuilder] | None = None) -> FileRecord:
    """Read a multipart upload (`file`, `purpose=batch`) as it arrives, staging its lines; the file's record.
    Raises UploadRefused (with the record kept as `error` if there was one)."""
    ul = UploadLimits.from_settings(settings)
    make = builder or (lambda: RequestBuilder(JobOptions(), limits, any_model=True))
    try:
        reader = MultipartReader(boundary_of(request.headers.get("content-type", "")))
    except MultipartError as e:
        raise UploadRefused(400, str(e), param="file") from None
    body_limit = ul.max_bytes + BODY_SLACK_BYTES
    drain_limit = 2 * ul.max_bytes + BODY_SLACK_BYTES
    too_large = UploadRefused(413, f"the file is over {ul.max_bytes} bytes (MAX_UPLOAD_BYTES): split it into "
                                   "smaller files", param="file", code="file_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > drain_limit:
        raise too_large  # not worth reading: the connection closes after the answer
    upload = _Upload(store, ul, make(), slots, owner)
    refusal: UploadRefused | None = too_large if declared.isdigit() and int(declared) > body_limit else None
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if refusal is not None:  # read and drop the rest, so the client reads the answer
                if received > drain_limit:
                    break
                continue
            try:
                if received > body_limit:
                    raise too_large
                for event in reader.feed(chunk):
                    await upload.on(event)
            except MultipartError as e:
                refusal = UploadRefused(400, f"the body is not valid multipart/form-data: {e}", param="file")
            except UploadRefused as e:
                refusal = e
        if refusal is None:
            try:
                reader.finish()
            except MultipartError as e:
                refusal = UploadRefused(400, f"the body is not valid multipart/form-data: {e}", param="file")
        if refusal is None:
            return await upload.finish()
    except UploadRefused as e:
        refusal = e
    except ClientDisconnect:
        await upload.refused("the upload was cut off before the whole file arrived")
        raise
    except BaseException as e:  # the store failed, or the request was cancelled
        await upload.refused(f"the upload failed: {type(e).__name__}")
        raise
    await upload.refused(refusal.message)
    raise refusal
