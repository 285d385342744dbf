"""The real vLLM CPU engine with the real SmolLM2 model, booted once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from shared.contracts.settings import Settings

#: a small context keeps the KV cache and the over-long-prompt test cheap
TEST_MAX_MODEL_LEN = 2048


def engine_settings(**overrides) -> Settings:
    return Settings(_env_file=None, max_model_len=TEST_MAX_MODEL_LEN, **overrides)


def model_copy(directory: Path) -> Path:
    """The embedded model's files in `directory` (made), weights linked, without its chat_template.jinja:
    a model directory a test can change (its template, its generation config) and boot."""
    from handler.engine.default_model import ensure_default_model

    smol = ensure_default_model(engine_settings().cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for f in smol.iterdir():
        if f.suffix == ".safetensors":
            (directory / f.name).symlink_to(f)
        elif f.is_file() and f.name != "chat_template.jinja":
            shutil.copy(f, directory / f.name)
    return directory


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine():
    from handler.engine.vllm_engine import VLLMEngine

    eng = await VLLMEngine.start(engine_settings())
    yield eng
    await eng.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
