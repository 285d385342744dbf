"""Settings is the one configuration class; .env.example mirrors it field for field."""

from __future__ import annotations

import re
from pathlib import Path

from shared.contracts.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_mirrors_settings():
    text = (ROOT / ".env.example").read_text()
    keys = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M)
    assert sorted(keys) == sorted(f.upper() for f in Settings.model_fields)


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("MAX_MODEL_LEN", "1024")
    monkeypatch.setenv("DEFAULT_MAX_TOKENS", "77")
    s = Settings(_env_file=None)
    assert s.max_model_len == 1024 and s.default_max_tokens == 77


def test_nothing_else_reads_os_environ():
    offenders = []
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("handler/**/*.py")]:
        text = path.read_text()
        if re.search(r"os\.environ\.get|os\.getenv|os\.environ\[", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_env_example_values_load_as_defaults(monkeypatch):
    for name in Settings.model_fields:  # the engine exports some (HF_HUB_OFFLINE) into this process
        monkeypatch.delenv(name.upper(), raising=False)
    defaults = Settings(_env_file=None).model_dump()
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            monkeypatch.setenv(key, value)
    loaded = Settings(_env_file=None)
    assert loaded.model_dump() == defaults
    assert loaded.model_name is None and "~" not in str(loaded.cache_dir)
