"""A client of the grading service, written from its contract alone: plain httpx and an SSE parser.

    python examples/dropin_client.py --url http://127.0.0.1:8080 --items answers.json [--key KEY] [-o grades.json]

It imports nothing from llm-jobs: it is what the service's existing clients do, and it works
unchanged against `llm-jobs serve` (README, "The grading service as a drop-in").

    POST /evaluate          {"items": [{"id_alumno", "curso", "consigna", "respuesta"}]}
                            -> {"job_id", "total_items", "estimated_time_seconds", "status", "stream_url"}
    GET  /stream/{job_id}   event: batch_complete  {"batch_number", "results": [{"id_alumno", "nota", "feedback"}],
                                                    "progress": {"completed", "total", "percentage",
                                                                 "elapsed_seconds", "estimated_remaining_seconds",
                                                                 "avg_time_per_item"}}
                            event: complete        {"total_processed", "total_time_seconds", "status"}
    GET  /health            {"status", "model_loaded", "gpu_available", "active_jobs"}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx


def sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) for each Server-Sent Event; comments (keep-alives) are skipped."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


def grade(url: str, items: list[dict], key: str | None, timeout: float = 30.0) -> tuple[dict, list[dict], dict]:
    """(the /evaluate answer, every graded result, the `complete` event)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as http:
        health = http.get("/health").json()
        print(f"health: {health}", file=sys.stderr)
        r = http.post("/evaluate", json={"items": items})
        r.raise_for_status()
        accepted = r.json()
        print(f"job {accepted['job_id']}: {accepted['total_items']} items, about "
              f"{accepted['estimated_time_seconds']:.0f} s", file=sys.stderr)
        results: list[dict] = []
        done: dict = {}
        stream_timeout = httpx.Timeout(timeout, read=None)  # the stream stays open as long as the job runs
        with http.stream("GET", accepted["stream_url"], timeout=stream_timeout) as s:
            s.raise_for_status()
            for event, data in sse(s.iter_lines()):
                body = json.loads(data)
                if event == "batch_complete":
                    results += body["results"]
                    p = body["progress"]
                    print(f"batch {body['batch_number']}: {p['completed']}/{p['total']} ({p['percentage']}%), "
                          f"{p['avg_time_per_item']} s/item, {p['estimated_remaining_seconds']} s left",
                          file=sys.stderr)
                elif event == "complete":
                    done = body
                    break
    return accepted, results, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--items", type=Path, required=True, help="a JSON list of {id_alumno, curso, consigna, respuesta}")
    ap.add_argument("--key", help="the API key (sent as Authorization: Bearer)")
    ap.add_argument("-o", "--output", type=Path, help="write the grades here (JSON)")
    a = ap.parse_args()
    accepted, results, done = grade(a.url, json.loads(a.items.read_text(encoding="utf-8")), a.key)
    print(f"complete: {done}", file=sys.stderr)
    out = json.dumps({"job_id": accepted["job_id"], "complete": done, "results": results}, ensure_ascii=False,
                     indent=1)
    if a.output:
        a.output.write_text(out, encoding="utf-8")
    else:
        print(out)
    sys.exit(0 if done.get("status") == "completed" else 1)


if __name__ == "__main__":
    main()
