"""The fit check (shared/planning/fit.py) against figures worked out by hand for Llama-3.1-8B and 70B, in bf16
and AWQ.

The rules: usable memory per GPU = memory x 0.90 - 2 GiB; AWQ = 4.25 bits a weight, the embeddings and output
head (2 x vocab x hidden, untied) in 16 bits; KV per token = 2 x layers x kv_heads x head_dim x 2 bytes (bf16).
"""

from __future__ import annotations

import pytest

from shared.planning.fit import GIB, check_fit, kv_bytes_per_token, weight_bytes, weight_format
from shared.planning.specs import builtin
from shared.planning.tables import GpuSpec

L8, L70 = builtin("Llama-3.1-8B"), builtin("Llama-3.1-70B")


def gpu(name: str, memory_gib: float, kv_cache_gib: float | None = None) -> GpuSpec:
    return GpuSpec(name=name, memory_gib=memory_gib, kv_cache_gib=kv_cache_gib, kind="published", source="test")


H100, L40S, L4 = gpu("H100", 80), gpu("L40S", 48), gpu("L4", 24)


def fit(spec, on, fmt, *, seq=2048, mean=1024.0, items=1000):
    return check_fit(spec, on, fmt=fmt, kv_dtype="bfloat16", max_seq_len=seq, mean_seq_len=mean, items=items)


def test_weights_by_hand():
    assert weight_bytes(L8, "bfloat16") == pytest.approx(8.03e9 * 2, rel=1e-3)
    assert weight_bytes(L70, "bfloat16") == pytest.approx(70.55e9 * 2, rel=1e-3)
    # AWQ: 1,050,673,152 embedding and head parameters at 2 bytes, the other 6,979,588,096 at 4.25 bits
    assert weight_bytes(L8, "awq") == 2 * 128256 * 4096 * 2 + (8_030_261_248 - 2 * 128256 * 4096) * 4.25 / 8
    assert weight_bytes(L8, "awq") / GIB == pytest.approx(5.41, abs=0.01)
    # 70B AWQ: 2,101,346,304 at 2 bytes + 68,452,360,192 at 4.25 bits = 40.57e9 bytes = 37.78 GiB
    assert weight_bytes(L70, "awq") / GIB == pytest.approx(37.78, abs=0.01)
    assert weight_bytes(L8, "float32") == 4 * L8.params and weight_bytes(L8, "fp8") == L8.params


def test_kv_per_token_by_hand():
    assert kv_bytes_per_token(L8, "bfloat16") == 2 * 32 * 8 * 128 * 2 == 131072
    assert kv_bytes_per_token(L70, "bfloat16") == 2 * 80 * 8 * 128 * 2 == 327680
    assert kv_bytes_per_token(L70, "fp8") == 163840


def test_8b_bf16_fits_one_l40s_and_its_concurrency():
    f = fit(L8, L40S, "bfloat16")
    usable = 48 * 0.9 - 2  # 41.2 GiB
    budget = usable - 8_030_261_248 * 2 / GIB  # 41.2 - 14.96 = 26.24 GiB for the KV cache
    assert (f.fits, f.tp) == (True, 1)
    assert f.usable_gib_per_gpu == pytest.approx(usable)
    assert f.kv_budget_gib == pytest.approx(budget)
    # 1024-token sequences at 128 KiB a token: 128 MiB each -> floor(26.24 x 8) = 209
    assert f.concurrency == int(budget * GIB // (131072 * 1024)) == 209 and f.limited_by == "memory"
    assert f.kv_gib == pytest.approx(209 * 131072 * 1024 / GIB)
    # on an H100 more fit than vLLM's max_num_seqs (256), and a small job caps it at its items
    assert (fit(L8, H100, "bfloat16").concurrency, fit(L8, H100, "bfloat16").limited_by) == (256, "max_num_seqs")
    assert (fit(L8, H100, "bfloat16", items=12).concurrency, fit(L8, H100, "bfloat16", items=12).limited_by) \
        == (12, "items")


def test_8b_awq_fits_an_l4():
    f = fit(L8, L4, "awq")
    assert (f.fits, f.tp) == (True, 1)
    assert f.weights_gib == pytest.approx(5.41, abs=0.01)
    assert f.kv_budget_gib == pytest.approx(24 * 0.9 - 2 - 5.41, abs=0.01)


def test_70b_bf16_needs_tensor_parallelism_on_80gb():
    f = fit(L70, H100, "bfloat16")
    # 141.1e9 bytes = 131.4 GiB over 70 GiB usable: 2 GPUs, 65.7 GiB each, 2 x 4.3 GiB left for the KV cache
    assert (f.fits, f.tp) == (True, 2)
    assert f.weights_gib == pytest.approx(131.4, abs=0.1)
    assert f.weights_gib_per_gpu == pytest.approx(65.7, abs=0.1)
    assert f.kv_budget_gib == pytest.approx(2 * (70 - 131.4 / 2), abs=0.1)
    # on 48 GB GPUs (41.2 GiB usable) it takes 4
    assert fit(L70, L40S, "bfloat16").tp == 4


def test_70b_awq_fits_one_80gb_gpu():
    f = fit(L70, H100, "awq")
    assert (f.fits, f.tp) == (True, 1)
    assert f.kv_budget_gib == pytest.approx(70 - 37.78, abs=0.01)
    # 327,680 bytes a token: a 1024-token sequence is 320 MiB -> 32.22 GiB hold 103
    assert f.concurrency == 103


def test_a_long_context_needs_more_gpus_for_one_sequence():
    # 70B AWQ on one L40S leaves 41.2 - 37.78 = 3.42 GiB: a 131072-token sequence needs 40 GiB of KV cache
    assert fit(L70, L40S, "awq").tp == 1
    assert fit(L70, L40S, "awq", seq=131072, mean=131072).tp == 2


def test_what_does_not_fit_says_why():
    f = fit(L70, L4, "float32")  # 282 GB: 32.9 GiB per GPU even on 8 L4s (19.6 GiB usable)
    assert not f.fits and f.tp == 8 and f.concurrency == 0
    assert "32.9 GiB per GPU on 8 x L4" in f.why_not and "19.6 GiB usable" in f.why_not


def test_tp_must_divide_the_heads():
    smol = builtin("SmolLM2-135M")  # 9 heads, 3 KV heads: only TP 1
    f = check_fit(smol, gpu("tiny", 2.1), fmt="float32", kv_dtype="float32", max_seq_len=2048, mean_seq_len=100,
                  items=10)
    assert not f.fits and f.tp == 1


def test_the_cpu_keeps_its_kv_cache_in_a_fixed_space():
    cpu = gpu("cpu", 23.5, kv_cache_gib=1)
    smol = builtin("SmolLM2-135M")
    f = check_fit(smol, cpu, fmt="float32", kv_dtype="float32", max_seq_len=2048, mean_seq_len=512, items=1000)
    per_token = 2 * 30 * 3 * 64 * 4  # 46,080 bytes
    assert (f.fits, f.kv_budget_gib, f.kv_bytes_per_token) == (True, 1, per_token)
    assert f.concurrency == GIB // (per_token * 512) == 45
    too_long = check_fit(smol, cpu, fmt="float32", kv_dtype="float32", max_seq_len=32768, mean_seq_len=512,
                         items=1)
    assert not too_long.fits and "CPU_KVCACHE_SPACE_GIB" in too_long.why_not
    assert not fit(L8, cpu, "float32").fits


def test_weight_format():
    assert weight_format("auto", None, on_cpu=False) == "bfloat16"
    assert weight_format("auto", None, on_cpu=True) == "float32"
    assert weight_format("bfloat16", "AWQ", on_cpu=False) == "awq"
    with pytest.raises(ValueError, match="int3"):
        weight_bytes(L8, "int3")
