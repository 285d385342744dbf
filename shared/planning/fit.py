"""Does a model fit a GPU, on how many, and how many sequences at once: `check_fit`.

The rules, each one a constant below so that a plan can state it:

- Weights: parameters x bytes per parameter of their format: float32 4, bfloat16/float16 2, fp8 1. AWQ and GPTQ
  (int4, group size 128) store 4 bits a weight plus a 16-bit scale and a 16-bit zero point per group of 128:
  4 + 32/128 = 4.25 bits. They quantize the decoder's linear layers only: the embeddings and the output head
  stay 16-bit.
- KV cache per token: 2 (K and V) x layers x kv_heads x head_dim x the KV cache dtype's bytes.
- Usable memory per GPU: its memory x gpu_memory_utilization (vLLM's, 0.90 by default) minus a fixed overhead
  (activations at the largest batch, CUDA graphs, the CUDA context: OVERHEAD_GIB). A device with a fixed KV
  space (vLLM's CPU backend: VLLM_CPU_KVCACHE_SPACE) holds its KV cache there instead.
- Tensor parallelism: the smallest of 1, 2, 4, 8 that divides the attention and the KV heads and leaves room,
  after its share of the weights, for the KV cache of one full sequence (vLLM refuses to start without it).
  Weights and KV cache split evenly over the GPUs.
- Concurrency: the sequences of mean length whose KV cache fits (vLLM pages the cache, so a sequence holds only
  the tokens it has), capped by max_num_seqs and by the items there are.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

from shared.planning.specs import ModelSpec
from shared.planning.tables import GpuSpec

GIB = 2**30
#: bytes per parameter, by weight format
BYTES_PER_PARAM: dict[str, float] = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0,
                                     "awq": 4.25 / 8, "gptq": 4.25 / 8}
#: formats that leave the embeddings and the output head in 16 bits
INT4 = frozenset({"awq", "gptq"})
#: bytes per KV cache element, by KV cache dtype
KV_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1}
#: vLLM's defaults
GPU_MEMORY_UTILIZATION = 0.90
MAX_NUM_SEQS = 256
#: per GPU: activations at the largest batch, CUDA graphs, the CUDA context
OVERHEAD_GIB = 2.0
TP_SIZES = (1, 2, 4, 8)

WeightFormat = Literal["float32", "bfloat16", "float16", "fp8", "awq", "gptq"]

RULES = ("weights: parameters x bytes per parameter (float32 4, bf16/fp16 2, fp8 1; AWQ/GPTQ int4 4.25 bits: "
         "4 bits plus a 16-bit scale and zero point per group of 128, embeddings and output head left in 16 bits)",
         "KV cache per token: 2 x layers x kv_heads x head_dim x the KV dtype's bytes",
         f"usable memory per GPU: memory x gpu_memory_utilization minus {OVERHEAD_GIB:g} GiB (activations, CUDA "
         "graphs, context)",
         "tensor parallelism: the smallest of 1, 2, 4, 8 dividing the attention and KV heads that leaves room for "
         "one full sequence's KV cache")


def weight_format(dtype: str, quantization: str | None, *, on_cpu: bool) -> str:
    """The weights' format: the quantization when there is one, else the dtype (`auto`: float32 on a CPU, as
    the engine loads it there, else bfloat16)."""
    if quantization:
        return quantization.lower()
    if dtype in ("auto", "", None):
        return "float32" if on_cpu else "bfloat16"
    return {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}.get(dtype, dtype)


def kv_dtype_for(fmt: str, kv_cache_dtype: str = "auto") -> str:
    """The KV cache's dtype: `auto` is the model's compute dtype (16-bit for quantized weights)."""
    if kv_cache_dtype not in ("auto", "", None):
        return "fp8" if kv_cache_dtype.startswith("fp8") else kv_cache_dtype
    return fmt if fmt in KV_BYTES and fmt != "fp8" else "bfloat16"


def weight_bytes(spec: ModelSpec, fmt: str) -> float:
    """The weights' bytes in memory (the rule in the module docstring)."""
    if fmt not in BYTES_PER_PARAM:
        raise ValueError(f"unknown weight format '{fmt}': one of {', '.join(BYTES_PER_PARAM)}")
    if fmt in INT4:
        embeddings = spec.embedding_params
        return embeddings * 2 + (spec.params - embeddings) * BYTES_PER_PARAM[fmt]
    return spec.params * BYTES_PER_PARAM[fmt]


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str) -> int:
    """KV cache bytes per token, over the whole model (all its GPUs)."""
    return 2 * spec.layers * spec.kv_heads * spec.head_dim * KV_BYTES[kv_dtype]


class Fit(BaseModel):
    """Every figure of a fit check, in GiB unless named otherwise."""

    gpu: str
    weight_format: str
    kv_dtype: str
    #: GPUs one engine spans (the smallest that fits; the largest tried when none does)
    tp: int
    weights_gib: float
    weights_gib_per_gpu: float
    kv_bytes_per_token: int
    usable_gib_per_gpu: float
    #: the KV cache's room, over the tp GPUs
    kv_budget_gib: float
    #: tokens of the longest sequence (prompt + output), and of the mean one
    max_seq_len: int
    mean_seq_len: float
    #: sequences at once: the most that fit, capped by max_num_seqs and by the items
    concurrency: int
    #: what caps the concurrency: memory, max_num_seqs or items
    limited_by: Literal["memory", "max_num_seqs", "items"]
    #: the KV cache at that concurrency (mean sequences)
    kv_gib: float
    fits: bool
    why_not: str | None = None


def _usable(gpu: GpuSpec, utilization: float, overhead_gib: float) -> float:
    return gpu.memory_gib * utilization - overhead_gib


def check_fit(spec: ModelSpec, gpu: GpuSpec, *, fmt: str, kv_dtype: str, max_seq_len: int, mean_seq_len: float,
              items: int, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
              overhead_gib: float = OVERHEAD_GIB, max_num_seqs: int = MAX_NUM_SEQS) -> Fit:
    """Does `spec` in `fmt` fit `gpu` (see the module docstring); the smallest tensor parallelism that does."""
    weights = weight_bytes(spec, fmt)
    per_token = kv_bytes_per_token(spec, kv_dtype)
    usable = _usable(gpu, gpu_memory_utilization, overhead_gib)
    one_sequence = per_token * max_seq_len
    sizes = [1] if gpu.kv_cache_gib is not None else [
        tp for tp in TP_SIZES if spec.heads % tp == 0 and spec.kv_heads % tp == 0]
    chosen, why = sizes[-1], None
    for tp in sizes:
        if _kv_budget(gpu, weights, tp, usable) >= one_sequence:
            chosen = tp
            break
    else:
        why = _why_not(gpu, weights, one_sequence, chosen, usable, max_seq_len)
    budget = max(0.0, _kv_budget(gpu, weights, chosen, usable))
    fits = why is None
    by_memory = math.floor(budget / (per_token * max(mean_seq_len, 1.0)))
    cap = {"memory": by_memory, "max_num_seqs": max_num_seqs, "items": max(items, 1)}
    limited_by = min(cap, key=lambda k: cap[k])
    concurrency = max(1, cap[limited_by]) if fits else 0
    return Fit(gpu=gpu.name, weight_format=fmt, kv_dtype=kv_dtype, tp=chosen, weights_gib=weights / GIB,
               weights_gib_per_gpu=weights / chosen / GIB, kv_bytes_per_token=per_token, usable_gib_per_gpu=usable,
               kv_budget_gib=budget / GIB, max_seq_len=max_seq_len, mean_seq_len=mean_seq_len,
               concurrency=concurrency, limited_by=limited_by,
               kv_gib=concurrency * per_token * mean_seq_len / GIB, fits=fits, why_not=why)


def _kv_budget(gpu: GpuSpec, weights: float, tp: int, usable_gib: float) -> float:
    """Bytes left for the KV cache over `tp` GPUs; a fixed KV space (CPU) once the weights fit beside it."""
    left = (usable_gib * GIB - weights / tp) * tp
    if gpu.kv_cache_gib is not None:
        return gpu.kv_cache_gib * GIB if left >= 0 else left
    return left


def _why_not(gpu: GpuSpec, weights: float, one_sequence: float, tp: int, usable_gib: float, seq: int) -> str:
    where = f"{tp} x {gpu.name}" if tp > 1 else gpu.name
    per_gpu = weights / tp / GIB
    if per_gpu > usable_gib:
        return (f"the weights need {per_gpu:.1f} GiB{' per GPU' if tp > 1 else ''} on {where}, over the "
                f"{usable_gib:.1f} GiB usable")
    if gpu.kv_cache_gib is not None:
        return (f"the {gpu.kv_cache_gib:g} GiB KV cache space (CPU_KVCACHE_SPACE_GIB) is too small for one "
                f"{seq}-token sequence ({one_sequence / GIB:.2f} GiB)")
    return (f"after the weights ({per_gpu:.1f} GiB{' per GPU' if tp > 1 else ''} on {where}) no room is left for "
            f"the KV cache of one {seq}-token sequence ({one_sequence / GIB:.2f} GiB)")
