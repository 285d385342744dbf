"""The Dockerfile cannot be built here (no Docker engine): lint it, and check that everything it
references exists and that every variable it sets is a Settings field."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from shared.contracts.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_copied_paths_exist_and_are_not_dockerignored():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = [src for word, rest in instructions() if word == "COPY" for src in rest.split()[:-1]]
    assert copied, "no COPY found"
    for src in copied:
        assert (ROOT / src).exists(), src
        assert src not in ignored, f"{src} is copied but .dockerignore drops it"


def test_commands_it_runs_exist():
    cmd = next(rest for word, rest in instructions() if word == "CMD")
    assert cmd == '["python3", "-u", "runpod_worker.py"]' and (ROOT / "runpod_worker.py").is_file()
    modules = re.findall(r"python3 -m ([\w.]+)", DOCKERFILE.replace('"-m", "', "-m "))
    modules += re.findall(r'"-m", "([\w.]+)"', DOCKERFILE)
    assert {"handler.health", "handler.engine.bake", "pip"} <= set(modules)
    for name in set(modules) - {"pip"}:
        assert hasattr(importlib.import_module(name), "main"), name
    health = next(rest for word, rest in instructions() if word == "HEALTHCHECK")
    assert "handler.health" in health and "--start-period" in health


def test_base_image_pinned_and_env_maps_to_settings():
    arg = next(rest for word, rest in instructions() if word == "ARG" and rest.startswith("VLLM_IMAGE="))
    assert arg == "VLLM_IMAGE=vllm/vllm-openai:v0.32.0"  # the vLLM release pyproject.toml pins
    assert 'vllm==0.32.0' in (ROOT / "pyproject.toml").read_text()
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    names = set(re.findall(r"([A-Z_]+)=", env))
    settings_fields = {f.upper() for f in Settings.model_fields}
    platform = {n for n in names if n.startswith(("PYTHON", "PIP_"))}
    assert names - platform <= settings_fields, names - platform - settings_fields
    assert {"HF_HOME", "VLLM_CACHE_ROOT", "BAKED_MODEL_DIR", "MODEL_NAME"} <= names
    assert re.search(r"HF_HOME=/runpod-volume/huggingface-cache\b", env)  # RunPod's cached models live there
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users == ["${RUN_AS}"] and "ARG RUN_AS=llmjobs" in DOCKERFILE  # non-root by default
    assert ("ENTRYPOINT", "[]") in instructions()  # the base image's `vllm serve` is not ours
