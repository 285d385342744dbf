from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Modal reads its config (and token) at import: point it at an empty file first, so no test can
# use a developer's token or reach Modal.
os.environ["MODAL_CONFIG_PATH"] = str(Path(tempfile.mkdtemp(prefix="modal-")) / "modal.toml")
for _var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402

from shared.contracts.errors import ConfigError  # noqa: E402
from shared.contracts.models import Item, Job  # noqa: E402
from shared.contracts.settings import Settings  # noqa: E402
from shared.queue.upstash import JobQueue  # noqa: E402
from testkit import SERVICE_KEY, UPSTASH_TOKEN  # noqa: E402


def make_job(n: int, **options) -> Job:
    return Job(items=[Item(custom_id=f"c{i}", prompt=f"prompt {i}") for i in range(n)], **options)


@pytest.fixture(scope="module")
def model_dir():
    """The embedded SmolLM2 model's directory (converted once); skips where it is not installed."""
    pytest.importorskip("transformers")
    from handler.engine.default_model import ensure_default_model

    try:
        return ensure_default_model(Settings(_env_file=None).cache_dir)
    except ConfigError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def pg():
    """A real PostgreSQL cluster with the migration applied, for the whole session."""
    from testkit.pg import PgCluster

    cluster = PgCluster()
    yield cluster
    cluster.destroy()


@pytest_asyncio.fixture
async def postgrest(pg):
    from testkit.postgrest import PostgrestTransport

    transport = PostgrestTransport(pg.url, SERVICE_KEY)
    yield transport
    await transport.aclose()


def _make_store(kind: str, pg, tmp_path, postgrest, **kw):
    if kind == "sqlite":
        from shared.stores.sqlite import SQLiteStore

        return SQLiteStore(tmp_path / "jobs.db", **kw)
    pg.truncate()
    if kind == "postgres":
        from shared.stores.postgres import PostgresStore

        return PostgresStore(pg.url, **kw)
    from shared.stores.supabase import SupabaseStore

    return SupabaseStore("http://supabase.test", SERVICE_KEY, transport=postgrest, **kw)


@pytest_asyncio.fixture(params=["sqlite", "postgres", "supabase"])
async def store(request, tmp_path):
    """The same behaviour suite runs against each backend."""
    from testkit.postgrest import PostgrestTransport

    pg = request.getfixturevalue("pg") if request.param != "sqlite" else None
    transport = PostgrestTransport(pg.url, SERVICE_KEY) if request.param == "supabase" else None
    s = _make_store(request.param, pg, tmp_path, transport, timeout_s=5)
    yield s
    await s.close()
    if transport is not None:
        await transport.aclose()


# ## The queue: a real redis-server behind the Upstash REST adapter


@pytest.fixture(scope="session")
def redis_server():
    from testkit.upstash import RedisServer

    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def upstash(redis_server):
    from testkit.upstash import UpstashAdapter

    adapter = UpstashAdapter(redis_server.url, UPSTASH_TOKEN).start()
    yield adapter
    adapter.stop()


def make_queue(upstash, **kw) -> JobQueue:
    # the trailing slash is on purpose: the queue must strip it
    return JobQueue.connect(upstash.url + "/", kw.pop("token", UPSTASH_TOKEN),
                            **{"retry_backoff_s": 0.2, "retry_backoff_max_s": 1, **kw})


@pytest_asyncio.fixture
async def queue(redis_server, upstash):
    redis_server.flush()
    q = make_queue(upstash)
    yield q
    await q.close()


@pytest.fixture
def restore_logging():
    """Put the logging set-up (root handlers, levels, warnings' hook) back after a test that changes it."""
    import logging
    import warnings

    from handler import logs

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("vllm", "py.warnings", *logs.THIRD_PARTY)
    levels = {n: logging.getLogger(n).level for n in names}
    showwarning = warnings.showwarning
    yield
    root.handlers[:], root.level = handlers, level
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)
    warnings.showwarning = showwarning
    logging.captureWarnings(False)
