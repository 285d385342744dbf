"""`shared` is the client side: it must import with no vllm and no torch installed."""

import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'vllm', 'torch', 'transformers'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import shared, shared.cli, shared.cli.output
import shared.contracts.inputs, shared.contracts.prepare, shared.contracts.openai_batch, shared.contracts.settings
import shared.stores.sqlite, shared.stores.postgres, shared.stores.supabase
import shared.contracts.compat, handler.platforms.runpod_harness, shared.cli.serve
import handler.service, handler.platforms.runpod
import handler.platforms.modal, handler.health, handler.engine.bake
import handler.runner, handler.progress
assert not {'vllm', 'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)
print('ok')
"""


def test_shared_imports_without_vllm_or_torch():
    out = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_help_runs_without_vllm():
    code = BLOCK.replace("print('ok')", "from shared.cli import app\nfrom typer.testing import CliRunner\n"
                         "r = CliRunner().invoke(app, ['run', '--help'])\nassert r.exit_code == 0, r.output\n"
                         "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
