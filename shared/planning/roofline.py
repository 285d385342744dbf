"""The `derived` rows of calibration.json: throughput computed from a GPU's datasheet, for GPUs not measured here.

    python -m shared.planning.roofline [--calibration FILE]

rewrites every derived row of the file (measured rows are kept) for each GPU of gpus.json with datasheet figures,
each model of MODELS and each format of FORMATS. The formula (a roofline: the slower of reading memory and
computing), with every constant stated:

- prefill tokens/s = MFU x dense bf16 FLOPS / (2 x params): a forward pass costs 2 FLOPs per parameter per token.
- decode tokens/s at B sequences = B / step, where one step (one token for each sequence) takes the longer of
  reading the weights and the KV cache of B sequences of DECODE_CONTEXT tokens at BANDWIDTH_EFFICIENCY x the
  memory bandwidth, and computing 2 x params x B FLOPs at MFU x FLOPS.
- B is DECODE_BATCH, or fewer where the KV cache holds fewer such sequences (shared/planning/fit.py).
- On TP GPUs, FLOPS and bandwidth are TP times one GPU's, times TP_EFFICIENCY (the all-reduces) for TP > 1.
- cold start = BOOT_S (container start, vLLM's engine build: CUDA graphs, warm-up) + one GPU's share of the
  weights read at LOAD_GBS (a cached volume or baked image, not a download).
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from shared.planning.fit import INT4, check_fit, kv_bytes_per_token, kv_dtype_for, weight_bytes
from shared.planning.specs import BUILTIN, ModelSpec
from shared.planning.tables import CALIBRATION_FILE, CalibrationRow, CalibrationTable, GpuSpec, Source, load_gpus

MFU = 0.5
#: int4 weights are dequantized on the fly: prefill runs a little below bf16's MFU
MFU_INT4 = 0.4
BANDWIDTH_EFFICIENCY = 0.7
DECODE_CONTEXT = 1024
DECODE_BATCH = 64
TP_EFFICIENCY = 0.85
BOOT_S = 30.0
LOAD_GBS = 2.0

MODELS = ("Llama-3.1-8B", "Llama-3.1-70B")
FORMATS = ("bfloat16", "awq")

SOURCE = Source(
    name="llm-jobs roofline",
    url="",
    note=(f"derived by shared/planning/roofline.py from gpus.json's datasheet figures: prefill = {MFU:g} MFU "
          f"({MFU_INT4:g} for int4) x dense bf16 FLOPS / (2 x params); decode at B sequences = B / max((weights + "
          f"B x {DECODE_CONTEXT} tokens x KV bytes per token) / ({BANDWIDTH_EFFICIENCY:g} x bandwidth), 2 x params "
          f"x B / ({MFU:g} x FLOPS)), B = {DECODE_BATCH} or what the KV cache holds; TP > 1 scales FLOPS and "
          f"bandwidth by TP x {TP_EFFICIENCY:g}; cold start = {BOOT_S:g} s (container start and vLLM's engine "
          f"build) + one GPU's share of the weights at {LOAD_GBS:g} GB/s from a cached volume, a fresh worker's "
          "start: RunPod's FlashBoot (https://blog.runpod.io/introducing-flashboot-1-second-serverless-cold-start/, "
          "cold starts from 0.5 s when it hits) or Modal's memory snapshots (https://modal.com/docs/guide/cold-start) "
          "can cut it to seconds, which is not assumed. "
          "Estimates, never measurements: replace them with --calibrate runs on the GPU."),
)


def tp_factor(tp: int) -> float:
    """What TP GPUs do, in single GPUs' worth."""
    return tp * (TP_EFFICIENCY if tp > 1 else 1.0)


def derive(spec: ModelSpec, gpu: GpuSpec, fmt: str, on: date) -> CalibrationRow | None:
    """The derived row of `spec` in `fmt` on `gpu`; None when it does not fit 8 of them or the GPU has no
    datasheet figures."""
    if gpu.bandwidth_gbs is None or gpu.bf16_tflops is None:
        return None
    fit = check_fit(spec, gpu, fmt=fmt, kv_dtype=kv_dtype_for(fmt), max_seq_len=2 * DECODE_CONTEXT,
                    mean_seq_len=DECODE_CONTEXT, items=DECODE_BATCH)
    if not fit.fits:
        return None
    scale = tp_factor(fit.tp)
    flops, bandwidth = gpu.bf16_tflops * 1e12 * scale, gpu.bandwidth_gbs * 1e9 * scale
    weights = weight_bytes(spec, fmt)
    prefill = (MFU_INT4 if fmt in INT4 else MFU) * flops / (2 * spec.params)
    batch = fit.concurrency
    read = (weights + batch * DECODE_CONTEXT * kv_bytes_per_token(spec, fit.kv_dtype)) / (
        BANDWIDTH_EFFICIENCY * bandwidth)
    compute = 2 * spec.params * batch / (MFU * flops)
    cold = BOOT_S + weights / fit.tp / (LOAD_GBS * 1e9)
    return CalibrationRow(gpu=gpu.name, model=spec.name, params_b=round(spec.params_b, 3), dtype=fmt, tp=fit.tp,
                          prefill_tps=round(prefill), decode_tps=round(batch / max(read, compute)),
                          concurrency=batch, cold_start_s=round(cold, 1), kind="derived", source=SOURCE.name,
                          date=on, note=f"{'memory' if read >= compute else 'compute'}-bound decode at B={batch}")


def derived_rows(on: date) -> list[CalibrationRow]:
    gpus = load_gpus().gpus
    rows = (derive(BUILTIN[m.lower()], gpu, fmt, on) for m in MODELS for gpu in gpus for fmt in FORMATS)
    return [r for r in rows if r is not None]


def rewrite(path: Path, on: date) -> CalibrationTable:
    """`path`'s table with its derived rows made again (measured and published rows kept)."""
    table = CalibrationTable.model_validate_json(path.read_text(encoding="utf-8"))
    kept = [r for r in table.rows if r.kind != "derived"]
    sources = [s for s in table.sources if s.name != SOURCE.name]
    rows = sorted([*kept, *derived_rows(on)], key=lambda r: (r.gpu, r.params_b, r.dtype))
    return CalibrationTable(updated=max(table.updated, on), sources=[SOURCE, *sources], rows=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibration", type=Path, default=CALIBRATION_FILE)
    args = ap.parse_args()
    table = rewrite(args.calibration, date.today())
    args.calibration.write_text(table.dump(), encoding="utf-8")
    print(f"{args.calibration}: {sum(r.kind == 'derived' for r in table.rows)} derived row(s)")


if __name__ == "__main__":
    main()
