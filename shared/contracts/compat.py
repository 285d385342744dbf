"""Inputs in other tools' shapes, turned into our Job document.

RunPod's worker-vllm takes `{"prompt" | "messages", "sampling_params": {...}}` for one request.
An endpoint moving to llm-jobs keeps working: that input is a one-item job, and the answer
comes back in worker-vllm's output shape (see handler/platforms/runpod.py).
"""

from __future__ import annotations

from typing import Any

from shared.contracts.errors import InputError, Issue

#: worker-vllm's sampling_params we honour (the rest would silently change nothing, so they are refused)
SAMPLING_KEYS = frozenset({"max_tokens", "temperature", "top_p", "seed", "stop", "presence_penalty",
                           "frequency_penalty"})
#: worker-vllm options that have no meaning for a batch job; accepted and ignored
IGNORED_KEYS = frozenset({"stream", "apply_chat_template", "max_batch_size", "min_batch_size",
                          "batch_size_growth_factor", "use_openai_format"})
WORKER_VLLM_ITEM_ID = "request"


def is_worker_vllm(payload: Any) -> bool:
    return isinstance(payload, dict) and "items" not in payload and ("prompt" in payload or "messages" in payload)


def from_worker_vllm(payload: dict[str, Any]) -> dict[str, Any]:
    """A Job document for a worker-vllm request; unknown fields are refused by name."""
    issues: list[Issue] = []
    for key in payload:
        if key not in {"prompt", "messages", "sampling_params", "model", "id"} | IGNORED_KEYS:
            issues.append(Issue("not a worker-vllm input field llm-jobs understands", field=key))
    params = payload.get("sampling_params") or {}
    if not isinstance(params, dict):
        issues.append(Issue("must be an object", field="sampling_params"))
        params = {}
    for key in params:
        if key not in SAMPLING_KEYS:
            issues.append(Issue(f"not supported (supported: {', '.join(sorted(SAMPLING_KEYS))})",
                                field=f"sampling_params.{key}"))
    if issues:
        raise InputError(issues)
    item: dict[str, Any] = {"custom_id": WORKER_VLLM_ITEM_ID}
    for key in ("prompt", "messages"):
        if key in payload:
            item[key] = payload[key]
    doc: dict[str, Any] = {"items": [item], "chunk_size": 1}
    if params:
        doc["sampling"] = params
    for key in ("model", "id"):
        if payload.get(key):
            doc[key] = payload[key]
    return doc
