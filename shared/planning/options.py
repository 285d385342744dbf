"""A plan's options from the deployment's Settings: the engine a job would run on (its dtype, quantization, KV
cache dtype, context and batch limits), with what the caller chose on top. Shared by `llm-jobs plan` and
`POST /v1/plan`."""

from __future__ import annotations

from typing import Literal

from shared.contracts.settings import Settings
from shared.planning.fit import MAX_NUM_SEQS
from shared.planning.plan import DEFAULT_GPUS, PlanOptions, Platform

Quantization = Literal["awq", "gptq", "fp8"]


def plan_options(settings: Settings, *, model: str, gpus: list[str] | None = None, platform: Platform | None = None,
                 workers: int = 1, quantization: Quantization | None = None,
                 max_tokens: int | None = None) -> PlanOptions:
    """PlanOptions for `model` on the engine these settings configure; `quantization` wins over QUANTIZATION."""
    return PlanOptions(model=model, gpus=gpus or list(DEFAULT_GPUS), platform=platform, workers=workers,
                       quantization=quantization or quantization_of(settings.quantization),
                       dtype=dtype_of(settings.dtype), kv_cache_dtype=kv_dtype_of(settings.kv_cache_dtype),
                       max_tokens=max_tokens, max_model_len=settings.max_model_len,
                       gpu_memory_utilization=settings.gpu_memory_utilization,
                       max_num_seqs=settings.max_num_seqs or MAX_NUM_SEQS,
                       cpu_kv_cache_gib=settings.cpu_kvcache_space_gib)


def quantization_of(value: str | None) -> Quantization | None:
    """QUANTIZATION as the planner knows it (awq_marlin is AWQ; a method it has no rule for is left out)."""
    v = (value or "").lower()
    return "awq" if v.startswith("awq") else "gptq" if v.startswith("gptq") else "fp8" if v.startswith("fp8") \
        else None


def dtype_of(value: str) -> Literal["auto", "float32", "bfloat16", "float16"]:
    v = {"bf16": "bfloat16", "half": "float16", "fp16": "float16", "float": "float32"}.get(value, value)
    return v if v in ("float32", "bfloat16", "float16") else "auto"  # type: ignore[return-value]


def kv_dtype_of(value: str) -> Literal["auto", "fp8"]:
    return "fp8" if value.startswith("fp8") else "auto"
