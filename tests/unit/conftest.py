"""Fixtures of the unit tests that render with the embedded model's real tokenizer (no engine boots)."""

from __future__ import annotations

import pytest

from shared.contracts.errors import ConfigError
from shared.contracts.settings import Settings


@pytest.fixture(scope="module")
def model_dir():
    """The embedded SmolLM2 model's directory (converted once); skips where it is not installed."""
    pytest.importorskip("transformers")
    from handler.engine.default_model import ensure_default_model

    try:
        return ensure_default_model(Settings(_env_file=None).cache_dir)
    except ConfigError as e:
        pytest.skip(str(e))


@pytest.fixture
def tokenizer(model_dir):
    """A fresh SmolLM2 HF tokenizer: a test may set its chat_template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
