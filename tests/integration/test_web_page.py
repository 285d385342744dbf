"""The web page at `/` in a real headless browser (issue 13): Playwright for Python driving Debian's
chromium, against the API under uvicorn on loopback with the real store (PostgreSQL), the real queue
(upstash-redis -> the REST adapter -> redis-server) and a drain worker on the real CPU engine.

An owner signs in with their API key, submits the grading example from the page, sees result rows
while the job still runs, cancels a second job and downloads its results; a Supabase user signed in
with an access token sees none of that owner's jobs. Through a proxy that drops every connection
mid-job, the page's stream resumes with Last-Event-ID and ends with every result, once. Screenshots
of each step go to out/web-page/.

Playwright's own browser download cannot be reached here: the test launches /usr/bin/chromium
(`apt-get install chromium`; .ci/run installs it). Where there is none it is skipped, except in CI,
where a missing browser fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import jwt
import pytest

from handler.worker import Worker
from shared.contracts.owners import new_key
from shared.contracts.prepare import Limits
from shared.server.api import create_app
from shared.stores.postgres import PostgresStore
from testkit.serve import DroppingProxy, LoopServer
from tests.conftest import make_queue
from tests.integration.test_api import api_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "out" / "web-page"
SECRET = "web-page-test-jwt-secret-of-at-least-thirty-two-characters"
USER = str(uuid.uuid4())

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("no chromium here (apt-get install chromium); CI installs it and runs these",
                allow_module_level=True)


@pytest.fixture
async def site(engine, pg, upstash, redis_server):
    """(url, alice's key, a Supabase access token of another user): the API on loopback, a drain worker on
    the session engine, results chunked one by one so the page gets them as they come."""
    pg.truncate()
    redis_server.flush()
    settings = api_settings(pg, upstash, supabase_jwt_secret=SECRET, default_chunk_size=1,
                            default_chunk_interval_s=0.5, rate_limit_per_minute=0, key_cache_s=0)
    store = PostgresStore(pg.url)
    key, rec = new_key("alice", "web page test")
    await store.create_key(rec)
    queue = make_queue(upstash)
    worker = Worker(engine, queue, store, concurrency=2, lease_s=60, limits=Limits.from_settings(settings),
                    poll_min_s=0.05, poll_max_s=0.2, chunk_size=settings.default_chunk_size,
                    chunk_interval_s=settings.default_chunk_interval_s)
    task = asyncio.create_task(worker.run())
    token = jwt.encode({"sub": USER, "aud": "authenticated", "role": "authenticated",
                        "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    async with LoopServer(create_app(settings)) as server:
        yield server.url, key, token
    worker.stop()
    await task
    await queue.close()
    await store.close()


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        await b.close()


async def sign_in(page, url: str, credential: str) -> None:
    """From the keyboard: focus the token field, type, Enter."""
    await page.goto(url)
    await page.get_by_label("API key or Supabase access token").fill(credential)
    await page.get_by_label("API key or Supabase access token").press("Enter")
    await page.locator("#jobs-table").wait_for(state="visible")


async def read_download(info) -> str:
    path = await (await info.value).path()
    return await asyncio.to_thread(Path(path).read_text)


async def shot(page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_the_page_submits_streams_cancels_downloads_and_keeps_owners_apart(site, browser, engine):
    url, key, token = site
    context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await sign_in(page, url, key)
    await page.locator("#health-state").filter(has_text="ready").wait_for()
    await shot(page, "1-signed-in")

    # ## the grading example, submitted from the page; rows appear while the job still runs
    await page.click("#load-example")
    example = await page.input_value("#items")
    # essays of staggered lengths: their results come one after another, not all at the end (an engine runs
    # them all at once; answers of one length would all end together)
    extra = [json.dumps({"custom_id": f"essay-{i:02d}", "sampling": {"max_tokens": 6 * i},
                         "fields": {"essay": f"Redacció {i}: el meu barri és tranquil."}}) for i in range(4, 13)]
    await page.fill("#items", example.rstrip("\n") + "\n" + "\n".join(extra) + "\n")
    await page.fill("#job-id", "essays-web")
    await page.fill("#max-tokens", "60")
    # ## planned first: the GPUs ranked, a recommendation, the assumptions; nothing runs until the submit
    await page.fill("#plan-gpus", "cpu,L40S,H100")
    await page.click("#plan-job")
    plan = page.locator("#plan")
    await plan.filter(has_text="Recommended").wait_for(timeout=120_000)
    assert "12 items" in await plan.locator("h3").text_content()
    planned = await plan.locator(".plan-table tbody tr").all_text_contents()
    assert len(planned) >= 3 and any("cpu on this machine" in row for row in planned), planned
    assert await plan.locator("details li").count() > 3  # the assumptions
    await shot(page, "2a-planned")
    # from now on, every time the page changes, note how many result rows it shows and what the status says
    await page.evaluate("""() => {
        window.__seen = [];
        const note = () => {
            const status = document.querySelector('#job-status');
            window.__seen.push([document.querySelectorAll('#results-table tbody tr[data-custom-id]').length,
                                status ? status.textContent.trim() : '', Math.round(performance.now())]);
        };
        new MutationObserver(note).observe(document.body, {childList: true, subtree: true, characterData: true});
    }""")
    await page.click("#submit-job")
    view = page.locator("#job-view")
    await view.wait_for(state="visible")
    assert await view.get_attribute("data-job-id") == "essays-web"
    await page.locator("#job-status").filter(has_text="completed").wait_for(timeout=300_000)
    await shot(page, "2-grading-example-completed")
    seen = await page.evaluate("window.__seen")
    assert any(rows > 0 and status in ("queued", "running") for rows, status, _ in seen), seen
    rows = page.locator("#results-table tbody tr")
    assert await rows.count() == 12
    ids = {await rows.nth(i).get_attribute("data-custom-id") for i in range(12)}
    assert ids >= {f"essay-{i:02d}" for i in range(4, 13)}
    assert "12" in (await page.text_content("#job-counts"))

    # ## a second job, cancelled from the page once its first result is in; its results downloaded
    await page.click("#back-to-list")
    long = [json.dumps({"custom_id": f"story-{i:02d}", "prompt": f"Write a long story about the number {i}.",
                        "sampling": {"max_tokens": 4 + 8 * i}}) for i in range(40)]
    await page.fill("#items", "\n".join(long) + "\n")
    await page.fill("#job-id", "stories")
    await page.fill("#template", "")
    await page.fill("#schema", "")
    await page.fill("#max-tokens", "200")
    await page.click("#submit-job")
    await page.locator('#results-table tbody tr[data-custom-id^="story-"]').first.wait_for(timeout=300_000)
    await page.locator("#cancel-job:enabled").click()
    await page.locator("#job-status").filter(has_text="cancelled").wait_for(timeout=120_000)
    await shot(page, "3-cancelled")
    stored = await page.evaluate("""async () => {
        const token = sessionStorage.getItem('llm-jobs-token');
        return await (await fetch('/v1/jobs/stories', {headers: {Authorization: 'Bearer ' + token}})).json();
    }""")
    assert stored["status"] == "cancelled" and 0 < stored["completed"] + stored["failed"] < 40
    async with page.expect_download() as ours:
        await page.click("#download-ours")
    lines = (await read_download(ours)).splitlines()
    assert len(lines) == stored["completed"] + stored["failed"]
    assert all(json.loads(x)["custom_id"].startswith("story-") for x in lines)
    async with page.expect_download() as theirs:
        await page.click("#download-openai")
    first = json.loads((await read_download(theirs)).splitlines()[0])
    assert first["custom_id"].startswith("story-") and "response" in first

    # ## the list shows both jobs with their status
    await page.click("#back-to-list")
    await page.locator('#jobs-table tr[data-job-id="stories"]').wait_for()
    listed = await page.eval_on_selector_all("#jobs-table tbody tr", "rows => rows.map(r => r.dataset.jobId)")
    assert listed == ["stories", "essays-web"]
    await shot(page, "4-jobs-list")

    # ## another owner (a Supabase user, signed in with their access token) sees none of it
    other = await (await browser.new_context()).new_page()
    await sign_in(other, url, token)
    await other.locator("#jobs-table").wait_for()
    await asyncio.sleep(0.5)  # the list has loaded (and stays empty)
    assert await other.locator("#jobs-table tbody tr[data-job-id]").count() == 0
    await other.goto(url + "/#/jobs/essays-web")
    await other.locator("#job-message").filter(has_text="no job").wait_for()
    await shot(other, "5-other-owner")
    assert await other.locator("#results-table tbody tr[data-custom-id]").count() == 0
    assert errors == [], errors


async def test_the_page_resumes_a_dropped_stream_with_no_gap_and_no_repeat(site, browser, engine):
    url, key, _ = site
    async with DroppingProxy(url) as proxy:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await sign_in(page, proxy.url, key)
        # the stream's states, as the page shows them
        await page.evaluate("""() => {
            window.__states = [];
            const state = document.querySelector('#stream-state');
            new MutationObserver(() => window.__states.push(state.dataset.state))
                .observe(state, {attributes: true, childList: true, characterData: true, subtree: true});
        }""")
        n = 16
        items = [json.dumps({"custom_id": f"tale-{i:02d}", "prompt": f"Tell a long tale about the number {i}.",
                             "sampling": {"max_tokens": 8 + 8 * i}}) for i in range(n)]
        await page.fill("#items", "\n".join(items) + "\n")
        await page.fill("#job-id", "tales")
        await page.fill("#template", "")
        await page.fill("#schema", "")
        await page.click("#submit-job")
        rows = page.locator('#results-table tbody tr[data-custom-id^="tale-"]')
        await rows.first.wait_for(timeout=300_000)
        proxy.drop()  # mid-job: the event stream (and any other open connection) is cut
        await page.locator("#stream-state[data-state=live]").wait_for(timeout=30_000)  # reconnected
        async with asyncio.timeout(300):
            while await rows.count() < 6 and await page.text_content("#job-status") != "completed":
                await asyncio.sleep(0.1)
        proxy.drop()  # and once more
        await page.locator("#job-status").filter(has_text="completed").wait_for(timeout=300_000)
        await shot(page, "6-resumed-after-drops")

        states = await page.evaluate("window.__states")
        assert "reconnecting" in states, states
        # it came back with the id of the last event it had read (the API's resume is tested in tests/api)
        resumed = [re.search(r"\r\nlast-event-id: (\S+)", h, re.I) for h in proxy.heads
                   if h.startswith("GET /v1/jobs/tales/events")]
        assert any(m and re.fullmatch(r"\d+-\d+", m[1]) for m in resumed), proxy.heads  # a queue stream's id
        ids = await rows.evaluate_all("rows => rows.map(r => r.dataset.customId)")
        assert sorted(ids) == [f"tale-{i:02d}" for i in range(n)]  # every result, one row each
        assert "16" in (await page.text_content("#job-counts"))
        assert errors == [], errors
