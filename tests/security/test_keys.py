"""The API-key guard is decided from the parsed key ring, never from the raw string (issue 11, finding 4)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.contracts.errors import ConfigError
from shared.contracts.settings import Settings
from shared.server.api import create_public_app
from shared.server.api.auth import KeyRing

LLM_JOBS = str(Path(sys.executable).with_name("llm-jobs"))


def serve_public(api_keys: str, tmp_path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "API_KEYS": api_keys, "SQLITE_PATH": str(tmp_path / "j.db")}
    return subprocess.run([LLM_JOBS, "serve", "--host", "0.0.0.0", "--port", "1"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("blank", [", ", ",,", " , , "])
def test_blank_entries_are_no_keys_and_a_public_server_is_refused(blank, tmp_path):
    assert Settings(_env_file=None, api_keys=blank).api_keys is None
    with pytest.raises(ConfigError, match="API_KEYS"):
        create_public_app(Settings(_env_file=None, api_keys=blank))
    out = serve_public(blank, tmp_path)
    assert out.returncode == 2 and "refusing to serve on a public interface" in out.stderr


@pytest.mark.parametrize("entry", ["sha256:abc", "sha256:" + "g" * 64, "sha256:" + "a" * 63, "sha256:"])
def test_a_malformed_digest_stops_start_up_with_a_clear_error_that_shows_no_key(entry, tmp_path):
    secret = "my-plain-secret-key"
    with pytest.raises(ValidationError, match="entry 2 starts with 'sha256:'") as e:
        Settings(_env_file=None, api_keys=f"{secret},{entry}")
    hex_part = entry.removeprefix("sha256:")
    assert secret not in str(e.value) and (not hex_part or hex_part not in str(e.value))
    out = serve_public(f"{secret},{entry}", tmp_path)
    assert out.returncode == 2 and "configuration error" in out.stderr and "api_keys" in out.stderr
    assert secret not in out.stderr + out.stdout and "Traceback" not in out.stderr


def test_plain_and_digest_entries_both_identify_their_key():
    digest = hashlib.sha256(b"second-key").hexdigest()
    ring = KeyRing.from_setting(Settings(_env_file=None, api_keys=f" first-key , sha256:{digest.upper()} ").api_keys)
    assert ring.enabled
    assert ring.identify("first-key") and ring.identify("second-key") == digest[:12]
    assert ring.identify("third-key") is None
