"""handler/logs.py: quiet by default, verbose with LOG_LEVEL=DEBUG (the CLI's -v), and light to import."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from handler import logs
from shared.contracts.settings import Settings, get_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"


def test_importing_logs_pulls_in_no_cli_server_or_engine():
    code = ("import sys, handler.logs\n"
            "print(sorted({'typer', 'rich', 'fastapi', 'vllm', 'torch'} & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_quiet_by_default(restore_logging):
    s = Settings(_env_file=None)
    logs.setup_logging(s)
    assert logging.getLogger("vllm").level == logging.ERROR
    assert logging.getLogger("torch").level == logging.WARNING
    assert not logging.getLogger("py.warnings").isEnabledFor(logging.WARNING)
    env = logs.engine_process_env(s)
    assert env["VLLM_LOGGING_LEVEL"] == "ERROR" and env["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"
    assert env["TORCH_CPP_LOG_LEVEL"] == "ERROR" and env["PYTHONWARNINGS"] == "ignore" and env["TQDM_DISABLE"] == "1"


def test_verbose_lets_the_noise_through(restore_logging):
    s = Settings(_env_file=None, log_level="DEBUG")
    logs.setup_logging(s)
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("vllm").level == logging.INFO
    assert logging.getLogger("py.warnings").isEnabledFor(logging.WARNING)
    env = logs.engine_process_env(s)
    assert env["VLLM_LOGGING_LEVEL"] == "INFO"
    assert not {"TORCH_CPP_LOG_LEVEL", "PYTHONWARNINGS", "TQDM_DISABLE"} & set(env)
    # an explicit VLLM_LOGGING_LEVEL below INFO is kept
    assert logs.vllm_log_level(Settings(_env_file=None, log_level="DEBUG", vllm_logging_level="debug")) == "DEBUG"


def test_cli_verbose_flag_sets_debug():
    from shared.cli import app

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["-v", "validate", str(EXAMPLE)])
        assert result.exit_code == 0, result.output
        assert get_settings().log_level == "DEBUG"
    finally:
        get_settings.cache_clear()
