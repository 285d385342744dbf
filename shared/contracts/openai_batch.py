"""Results as OpenAI Batch API output lines, and back.

    {"id": "batch_req_...", "custom_id": "...",
     "response": {"status_code": 200, "request_id": "...", "body": {chat.completion}},
     "error": null}

An item error keeps a response with its HTTP-style status code and an OpenAI error body,
and also fills `error` with our code and message, as vLLM's run_batch does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from shared.contracts.errors import STATUS_CODES
from shared.contracts.models import ItemError, Result, ResultStatus, Usage


def _request_id(job_id: str, custom_id: str) -> str:
    # Stable across re-runs, so a resumed job writes the same ids.
    return hashlib.sha256(f"{job_id}\0{custom_id}".encode()).hexdigest()[:24]


def to_openai(result: Result, *, job_id: str, model: str, created: int = 0) -> dict[str, Any]:
    rid = _request_id(job_id, result.custom_id)
    if result.status == ResultStatus.ok:
        usage = result.usage or Usage()
        body: dict[str, Any] = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }],
            "usage": usage.model_dump(),
        }
        return {"id": f"batch_req_{rid}", "custom_id": result.custom_id,
                "response": {"status_code": 200, "request_id": rid, "body": body}, "error": None}
    err = result.error or ItemError(code="engine_error", message="unknown error")
    status = STATUS_CODES.get(err.code, 500)
    body = {"error": {"message": err.message, "type": "invalid_request_error" if status < 500 else "server_error",
                      "param": None, "code": err.code}}
    return {"id": f"batch_req_{rid}", "custom_id": result.custom_id,
            "response": {"status_code": status, "request_id": rid, "body": body},
            "error": {"code": err.code, "message": err.message}}


def from_openai(line: dict[str, Any]) -> Result:
    """Read an OpenAI Batch output line back into a Result (latency and parsed are not carried)."""
    custom_id = line["custom_id"]
    response = line.get("response") or {}
    body = response.get("body") or {}
    if line.get("error") or response.get("status_code", 200) != 200:
        err = line.get("error") or body.get("error") or {}
        return Result.failure(custom_id, err.get("code") or "engine_error", err.get("message") or "")
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return Result(custom_id=custom_id, status=ResultStatus.ok,
                  text=message.get("content", choice.get("text")),
                  finish_reason=choice.get("finish_reason"),
                  usage=Usage.model_validate(body["usage"]) if body.get("usage") else None)
