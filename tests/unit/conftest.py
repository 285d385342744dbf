"""Fixtures of the unit tests that render with the embedded model's real tokenizer (no engine boots; its
directory: `model_dir`, tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def tokenizer(model_dir):
    """A fresh SmolLM2 HF tokenizer: a test may set its chat_template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
