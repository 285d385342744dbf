"""The official `openai` client, unchanged, against our API (`base_url=<api>/v1`, an llm-jobs key):
Files and Batches end to end, with the real store (PostgreSQL), the real queue and a drain worker on
the real CPU engine."""

from __future__ import annotations

import asyncio
import json
import time

import openai

from tests.integration.test_api import KEY, api  # noqa: F401 - the fixture

TERMINAL = {"completed", "failed", "cancelled", "expired"}


def line(custom_id: str, model: str, text: str, max_tokens: int = 8) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                     "temperature": 0}}


def jsonl(rows: list) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


async def wait_for(oa: openai.AsyncOpenAI, batch_id: str, statuses: set[str], within_s: float = 400):
    deadline = time.monotonic() + within_s
    while (batch := await oa.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        await asyncio.sleep(0.2)
    return batch


async def test_files_and_batches_through_the_openai_client(api, engine):  # noqa: F811
    client, _ = api
    oa = openai.AsyncOpenAI(base_url=f"{client.base_url}/v1", api_key=KEY, max_retries=0)
    model = engine.model_name
    rows = [line(f"r{i}", model, f"Say the number {i}.") for i in range(5)]
    rows.insert(2, '{"custom_id": "broken", "method": "POST", "url": "/v1/chat/completions", "body": {"model": ')
    uploaded = await oa.files.create(file=("batch.jsonl", jsonl(rows)), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(rows))
    assert (await oa.files.retrieve(uploaded.id)).id == uploaded.id

    batch = await oa.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h", metadata={"suite": "nightly"})
    assert batch.object == "batch" and batch.input_file_id == uploaded.id and batch.metadata == {"suite": "nightly"}
    done = await wait_for(oa, batch.id, TERMINAL)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 5, 1)
    assert done.completed_at and done.output_file_id and done.error_file_id

    out = [json.loads(x) for x in (await oa.files.content(done.output_file_id)).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == [f"r{i}" for i in range(5)]
    for o in out:
        assert o["response"]["status_code"] == 200 and o["error"] is None
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == model
        assert isinstance(body["choices"][0]["message"]["content"], str)
    errors = [json.loads(x) for x in (await oa.files.content(done.error_file_id)).text.splitlines()]
    # a line that is not JSON has no custom_id to read: it is named by its place (item-2, the third line)
    assert [e["custom_id"] for e in errors] == ["item-2"]
    assert "line 3" in json.dumps(errors[0])

    listed = await oa.batches.list(limit=10)
    assert batch.id in [b.id for b in listed.data]

    # cancel during a run: the rest never runs, what is stored stays. The requests end one after another
    # (max_tokens 4, 8, ... 240), so the run is mid-way when the cancel comes, and stops at its next chunk.
    long_rows = [line(f"long{i:02d}", model, f"Write a long story about the number {i}.", 4 + 4 * i)
                 for i in range(60)]
    long_file = await oa.files.create(file=("long.jsonl", jsonl(long_rows)), purpose="batch")
    running = await oa.batches.create(input_file_id=long_file.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
    deadline = time.monotonic() + 300
    while (await oa.batches.retrieve(running.id)).request_counts.completed == 0:  # the first chunk is in
        assert time.monotonic() < deadline, "no result came"
        await asyncio.sleep(0.1)
    cancelling = await oa.batches.cancel(running.id)
    assert cancelling.status in ("cancelling", "cancelled")
    ended = await wait_for(oa, running.id, TERMINAL)
    assert ended.status == "cancelled" and ended.cancelled_at
    assert 0 < ended.request_counts.completed < 60
    await oa.close()
