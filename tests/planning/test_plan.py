"""The plan (shared/planning/plan.py) on a small hand-made table: times and costs worked out by hand, the ranking,
the recommendation and its reason."""

from __future__ import annotations

from datetime import date

import pytest

from shared.planning.plan import PlanOptions, TokenCounts, UnknownGpu, duration, make_plan, nearest_row
from shared.planning.specs import builtin
from shared.planning.tables import (
    Addon,
    CalibrationRow,
    CalibrationTable,
    GpuSpec,
    GpuTable,
    Price,
    PriceTable,
    Source,
    Tables,
)

SMOL = builtin("SmolLM2-135M")  # 0.1345B parameters
DAY = date(2026, 1, 2)
SRC = [Source(name="hand")]


def row(gpu: str, prefill: float, decode: float, cold: float, *, params_b: float = 0.135, dtype: str = "bfloat16",
        concurrency: int = 4, tp: int = 1, kind: str = "derived") -> CalibrationRow:
    return CalibrationRow(gpu=gpu, params_b=params_b, dtype=dtype, tp=tp, prefill_tps=prefill, decode_tps=decode,
                          concurrency=concurrency, cold_start_s=cold, kind=kind, source="hand", date=DAY)


def tables(*extra_rows: CalibrationRow) -> Tables:
    gpus = [GpuSpec(name=n, memory_gib=m, kind="published", source="hand") for n, m in
            (("G1", 24), ("G2", 80), ("tiny", 2))]
    gpus.append(GpuSpec(name="cpu", memory_gib=16, kv_cache_gib=1, kind="measured", source="hand"))
    prices = [Price(gpu="G1", platform="runpod", tier="flex", usd_per_s=0.001, kind="published", source="hand"),
              Price(gpu="G1", platform="runpod", tier="active", usd_per_s=0.0005, kind="published", source="hand"),
              Price(gpu="G2", platform="modal", usd_per_s=0.002, kind="published", source="hand"),
              Price(gpu="tiny", platform="modal", usd_per_s=0.0001, kind="published", source="hand")]
    addon = Addon(platform="modal", cpu_cores=4, memory_gib=0, usd_per_core_s=0.00001, usd_per_gib_s=0.0,
                  kind="published", source="hand")
    rows = [row("G1", 1000, 100, 10), row("G2", 2000, 400, 20), row("tiny", 1, 1, 1),
            row("cpu", 500, 10, 5, dtype="float32", kind="measured"), *extra_rows]
    return Tables(gpus=GpuTable(updated=DAY, sources=SRC, gpus=gpus),
                  prices=PriceTable(updated=DAY, sources=SRC, prices=prices, addons=[addon]),
                  calibration=CalibrationTable(updated=DAY, sources=SRC, rows=rows))


#: 8 items of 100 prompt tokens, max_tokens 50 each: 800 prompt tokens, at most 400 output tokens
TOKENS = TokenCounts.of([100] * 8, [50] * 8, tokenizer="hand")


def plan(tokens=TOKENS, *, spec=SMOL, gpus=("G1", "G2", "tiny"), t=None, **options):
    return make_plan(tokens, spec, PlanOptions(model=spec.name, gpus=list(gpus), **options), t or tables())


def by_label(p):
    return {r.label: r for r in p.rows}


def test_times_and_costs_by_hand():
    rows = by_label(plan())
    flex, active, modal = rows["G1 on RunPod (flex)"], rows["G1 on RunPod (active)"], rows["G2 on Modal"]
    # G1: cold 10 s + 800 / 1000 + 400 / 100 (8 sequences in flight, above the row's 4: not raised)
    assert (flex.cold_start_s, flex.prefill_s, flex.decode_s, flex.time_s) == pytest.approx((10, 0.8, 4, 14.8))
    assert flex.cost_usd == pytest.approx(14.8 * 0.001)
    # an active worker is warm: no cold start
    assert (active.time_s, active.cost_usd) == pytest.approx((4.8, 4.8 * 0.0005))
    # G2 on Modal: 20 + 0.4 + 1.0 s, at $0.002 a GPU-second plus 4 cores x $0.00001
    assert modal.time_s == pytest.approx(21.4)
    assert modal.cost_usd == pytest.approx(21.4 * (0.002 + 0.00004))
    assert (modal.price_per_s, modal.addon_per_s) == pytest.approx((0.002, 0.00004))


def test_ranked_by_cost_then_time_billed_by_use_first_and_what_does_not_fit_last():
    p = plan()
    # the active worker is the cheapest for this one job, but it is billed around the clock: after those billed by use
    assert [r.label for r in p.rows] == ["G1 on RunPod (flex)", "G2 on Modal", "G1 on RunPod (active)",
                                         "tiny on Modal"]
    tiny = p.rows[-1]
    assert not tiny.fits and tiny.cost_usd is None and "usable" in tiny.why_not


def test_the_recommendation_is_billed_by_use_and_says_why():
    p = plan()
    assert p.recommendation.label == "G1 on RunPod (flex)"
    assert p.reason.startswith("G1 on RunPod (flex) is the cheapest that fits: $0.0148 for about 15 s")
    assert "G1 on RunPod (active) would cost $0.0024" in p.reason and "around the clock" in p.reason
    assert [r.label for r in p.alternatives] == ["G2 on Modal"]


def test_a_tie_in_cost_goes_to_the_faster():
    # G1: 5 + 800 / 800 + 400 / 100 = 10 s at $0.002/s; G2: 10 + 800 / 400 + 400 / 50 = 20 s at $0.001/s
    t = Tables(gpus=tables().gpus, calibration=CalibrationTable(updated=DAY, sources=SRC, rows=[
        row("G1", 800, 100, 5), row("G2", 400, 50, 10)]), prices=PriceTable(updated=DAY, sources=SRC, prices=[
            Price(gpu=g, platform="modal", usd_per_s=usd, kind="published", source="hand")
            for g, usd in (("G2", 0.001), ("G1", 0.002))]))
    p = make_plan(TOKENS, SMOL, PlanOptions(model="s", gpus=["G2", "G1"]), t)
    assert [(r.gpu, r.time_s) for r in p.rows] == [("G1", 10), ("G2", 20)]
    assert p.rows[0].cost_usd == p.rows[1].cost_usd == pytest.approx(0.02)


def test_a_gpu_a_platform_does_not_offer_is_said_so():
    p = plan(gpus=("G1", "G2"), platform="runpod")
    assert [r.gpu for r in p.rows] == ["G1", "G1"]
    assert any("not offered on RunPod" in a and "G2" in a for a in p.assumptions)


def test_the_platform_filter():
    assert {r.platform for r in plan(platform="modal").rows} == {"modal"}


def test_workers_split_the_items_and_each_pays_its_cold_start():
    flex = by_label(plan(workers=2))["G1 on RunPod (flex)"]
    # 4 items each: 10 + 400 / 1000 + 200 / 100 s, on 2 GPUs
    assert (flex.time_s, flex.workers, flex.concurrency) == pytest.approx((12.4, 2, 4))
    assert flex.cost_usd == pytest.approx(12.4 * 2 * 0.001)
    assert plan(TokenCounts.of([100], [50]), workers=5).rows[0].workers == 1


def test_fewer_sequences_than_the_row_slow_decode_down():
    flex = by_label(plan(TokenCounts.of([100] * 2, [50] * 2)))["G1 on RunPod (flex)"]
    # 2 of the row's 4 sequences: decode at 50 tokens/s
    assert flex.decode_s == pytest.approx(100 / 50)
    assert "decode x0.5 for 2 of 4 sequences" in flex.calibration_note


def test_a_sampled_mean_replaces_the_upper_bound():
    sampled = TOKENS.model_copy(update={"sampled": 3, "output_tokens_mean": 10.0})
    flex = by_label(plan(sampled))["G1 on RunPod (flex)"]
    assert flex.decode_s == pytest.approx(80 / 100)
    p = plan(sampled)
    assert any("the mean of 3 item(s) run" in a for a in p.assumptions)
    assert any("upper bound" in a for a in plan().assumptions)


def test_max_tokens_override():
    flex = by_label(plan(max_tokens=10))["G1 on RunPod (flex)"]
    assert flex.decode_s == pytest.approx(80 / 100)


def test_another_size_is_scaled_by_parameters_and_said_so():
    p = plan(spec=builtin("Llama-3.1-8B"), gpus=("G2",))
    modal = p.rows[0]
    scale = 0.135 / 8.030261248
    assert modal.prefill_s == pytest.approx(800 / (2000 * scale))
    assert any("scaled by parameters" in a and "G2 (0.135B)" in a for a in p.assumptions)


def test_nearest_row_prefers_the_format_then_the_size():
    rows = [row("G", 1, 1, 1, params_b=8), row("G", 1, 1, 1, params_b=70), row("G", 1, 1, 1, params_b=7, dtype="awq")]
    assert nearest_row(rows, 27, "bfloat16").params_b == 70
    assert nearest_row(rows, 9, "bfloat16").params_b == 8
    assert nearest_row(rows, 70, "awq").params_b == 7
    assert nearest_row(rows, 70, "fp8").params_b == 70
    assert nearest_row([], 8, "awq") is None


def test_the_local_machine_costs_nothing_and_can_win():
    p = plan(gpus=("cpu", "G1"))
    cpu = by_label(p)["cpu (this machine)"]
    # float32 on a CPU; 5 + 800 / 500 + 400 / 10 s
    assert (cpu.platform, cpu.cost_usd, cpu.time_s) == pytest.approx(("local", 0.0, 46.6))
    assert p.recommendation == cpu and "costs nothing per second" in p.reason
    assert "the fastest is G1 on RunPod (flex): about 15 s for $0.0148" in p.reason
    assert p.weight_format == "bfloat16, float32"


def test_a_gpu_without_calibration_is_listed_last_with_the_reason():
    t = tables()
    t = t.model_copy(update={"calibration": t.calibration.model_copy(
        update={"rows": [r for r in t.calibration.rows if r.gpu != "G2"]})})
    p = plan(t=t)
    g2 = by_label(p)["G2 on Modal"]
    assert g2.fits and g2.time_s is None and "no calibration row" in g2.why_not
    assert p.rows[2:] == [g2, by_label(p)["tiny on Modal"]]


def test_nothing_fits():
    p = plan(gpus=("tiny",))
    assert p.recommendation is None and p.reason.startswith("Nothing can be planned: the weights need")


def test_an_unknown_gpu_is_refused_by_name():
    with pytest.raises(UnknownGpu, match=r"X100.*known: G1, G2, tiny, cpu"):
        plan(gpus=("G1", "X100"))


def test_the_plan_reports_its_tables_and_serializes():
    p = plan()
    assert [(i.name, i.updated) for i in p.tables] == [("gpus", DAY), ("prices", DAY), ("calibration", DAY)]
    assert type(p).model_validate_json(p.model_dump_json()) == p


def test_duration():
    assert [duration(s) for s in (0.44, 45, 750, 11520)] == ["0.4 s", "45 s", "12.5 min", "3.2 h"]
