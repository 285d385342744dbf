"""Write results as JSONL: our result lines or OpenAI Batch output lines, durable per chunk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Literal

from shared.contracts.models import Result
from shared.contracts.openai_batch import to_openai

ResultFormat = Literal["ours", "openai"]


def result_line(result: Result, fmt: ResultFormat, *, job_id: str, model: str) -> str:
    if fmt == "openai":
        return json.dumps(to_openai(result, job_id=job_id, model=model), ensure_ascii=False)
    return result.model_dump_json()


class ResultWriter:
    """Appends each chunk to a JSONL file and fsyncs it, so a crash keeps every written chunk."""

    def __init__(self, path: Path, fmt: ResultFormat, *, job_id: str, model: str):
        self.path = path
        self.fmt = fmt
        self.job_id = job_id
        self.model = model
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = path.open("w", encoding="utf-8")

    def write(self, results: list[Result]) -> None:
        lines = [result_line(r, self.fmt, job_id=self.job_id, model=self.model) for r in results]
        self._f.write("".join(line + "\n" for line in lines))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
