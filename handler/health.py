"""A container health signal for platforms with no HTTP port (the RunPod worker).

The worker process beats a file while its engine is alive; the Dockerfile's HEALTHCHECK runs

    python -m handler.health [--max-age 60]

which exits 0 when the file was touched recently and 1 otherwise (the engine died, or the
process hangs). Before the first beat (the engine is still booting) the check fails, and the
HEALTHCHECK's start period covers that.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shared.contracts.settings import get_settings


class HealthBeat:
    def __init__(self, path: Path, alive: Callable[[], bool], *, every_s: float = 10.0):
        self.path, self.alive, self.every_s = path, alive, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llm-jobs-health", daemon=True)

    def start(self) -> HealthBeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.alive():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch()
            self._stop.wait(self.every_s)


def healthy(path: Path, max_age_s: float, *, now: float | None = None) -> bool:
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return False
    return age <= max_age_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Exit 0 if the llm-jobs worker beat recently.")
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds since the last beat")
    args = parser.parse_args(argv)
    path = get_settings().health_file
    ok = healthy(path, args.max_age)
    print(f"{'healthy' if ok else 'unhealthy'}: {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
