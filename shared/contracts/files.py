"""Uploaded files (OpenAI's Files API, `purpose=batch`): the record the store keeps.

A file's lines are staged in the store as they are read (`Store.stage_file_lines`): each line is an
`Item`, or a `Rejection` that names the line and the field. Nothing keeps a whole file in memory.
A batch made from a file copies its lines into the job's items (`Store.copy_file_items`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

FileStatus = Literal["uploaded", "processed", "error"]


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


class FileRecord(BaseModel):
    """A stored file. `lines` counts staged lines (items and rejections); `rejected` those refused."""

    id: str = Field(default_factory=new_file_id)
    purpose: str = "batch"
    filename: str = "input.jsonl"
    bytes: int = 0
    lines: int = 0
    rejected: int = 0
    status: FileStatus = "uploaded"
    status_details: str | None = None
    owner: str | None = None
    created_at: datetime | None = None
