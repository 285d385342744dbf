"""`/healthz` latency while one heavy job submission is in flight (issue 11, finding 2).

    python -m benchmarks.healthz_under_load [--rounds 3]

The API runs in a subprocess of its own (uvicorn on loopback, a SQLite store, a dispatcher that
only records), so the client's threads do not share its GIL. For each hostile body, one thread
posts it while this one polls `/healthz` back to back; the figures are the polls' p50, p99 and max
while the post was in flight, and what the post answered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

JSON = "application/json"


def hostile_bodies() -> dict[str, tuple[str, bytes]]:
    """The issue's four requests: name -> (content type, body)."""
    nested = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x"
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 10} for i in range(100_000)}}
    items = [{"custom_id": f"c{i:06d}", "messages": [{"role": "user", "content": f"Summarize record {i}."}],
              "sampling": {"temperature": 0.2}} for i in range(88_000)]
    docs = {
        "template: nested range(10000) loops": {"template": nested, "items": [{"fields": {}}]},
        "template: 'a'*10**8": {"template": "{{ 'a'*10**8 }}", "items": [{"fields": {}}]},
        "schema: 4.6 MB, 100k properties": {"items": [{"prompt": "hi"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "o", "schema": schema}}},
        "body: 88k items": {"items": items},
    }
    return {name: (JSON, json.dumps(doc).encode()) for name, doc in docs.items()}


# ## The API in a process of its own


def _serve(port: int, db: str) -> None:
    import uvicorn

    from shared.contracts.settings import Settings
    from shared.server.api import create_app
    from shared.stores.sqlite import SQLiteStore

    class Recording:
        """Takes every job, runs none."""

        name = "recording"

        def check(self, ref: object) -> None: ...
        async def submit(self, refs: object) -> None: ...
        async def cancel(self, job_id: str) -> bool:
            return False

        async def ready(self) -> dict[str, str]:
            return {}

        async def close(self) -> None: ...

    settings = Settings(_env_file=None, rate_limit_per_minute=0, max_body_bytes=64 * 2**20)
    app = create_app(settings, store=SQLiteStore(Path(db)), dispatcher=Recording())  # type: ignore[arg-type]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextlib.contextmanager
def api_process() -> Iterator[str]:
    """The API's base URL, served by a subprocess until the block ends."""
    from testkit.serve import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="healthz-") as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.healthz_under_load", "--serve", str(port),
                                 str(Path(tmp) / "jobs.db")], cwd=Path(__file__).resolve().parents[1])
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API process did not start")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# ## Measuring


@dataclass
class Figures:
    name: str
    polls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    post_s: float
    status: int

    def line(self) -> str:
        return (f"{self.name:<36} healthz p50 {self.p50_ms:6.1f} ms  p99 {self.p99_ms:6.1f} ms  "
                f"max {self.max_ms:6.1f} ms  ({self.polls} polls)  post: {self.status} in {self.post_s:.2f} s")


def measure(url: str, name: str, content_type: str, body: bytes, *, min_s: float = 0.3) -> Figures:
    """Poll /healthz while `body` is posted; at least `min_s` of polling."""
    answer: dict[str, float] = {}

    def post() -> None:
        started = time.perf_counter()
        with httpx.Client(timeout=300) as client:
            r = client.post(f"{url}/v1/jobs", content=body, headers={"content-type": content_type})
        answer.update(status=r.status_code, s=time.perf_counter() - started)

    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=300) as client:
        client.get("/healthz")  # a warm connection
        poster = threading.Thread(target=post)
        started = time.perf_counter()
        poster.start()
        while poster.is_alive() or time.perf_counter() - started < min_s:
            t = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append((time.perf_counter() - t) * 1000)
            time.sleep(0.005)
        poster.join()
    cut = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return Figures(name, len(latencies), statistics.median(latencies), cut[98], max(latencies), answer["s"],
                   int(answer["status"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        _serve(int(args.serve[0]), args.serve[1])
        return
    bodies = hostile_bodies()
    with api_process() as url:
        print(f"idle: {measure(url, 'idle', JSON, b'{}').line()}")
        for n in range(1, args.rounds + 1):
            for name, (content_type, body) in bodies.items():
                print(f"round {n}: {measure(url, name, content_type, body).line()}", flush=True)


if __name__ == "__main__":
    main()
