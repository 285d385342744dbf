"""The planner's tables (shared/planning/*.json): they load, are dated, name their sources, agree with each other,
and a bad one is refused with the file and the field named."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from shared.planning import roofline
from shared.planning.tables import (
    CALIBRATION_FILE,
    GPUS_FILE,
    PRICES_FILE,
    CalibrationRow,
    Source,
    TableError,
    load_calibration,
    load_gpus,
    load_prices,
    load_tables,
)


@pytest.mark.parametrize("load", [load_gpus, load_prices, load_calibration])
def test_each_table_loads_dated_with_sources(load):
    table = load()
    assert isinstance(table.updated, date) and table.updated <= date.today()
    assert table.sources and all(s.name for s in table.sources)
    rows = table._rows()
    assert rows and all(r.kind in ("measured", "published", "derived") for r in rows)
    assert all(r.source in {s.name for s in table.sources} for r in rows)


def test_the_tables_agree_with_each_other():
    tables = load_tables()
    gpus = set(tables.gpus.names)
    assert {p.gpu for p in tables.prices.prices} <= gpus
    assert {r.gpu for r in tables.calibration.rows} <= gpus
    # the GPUs the issue names, and the local machine
    assert {"L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "cpu"} <= gpus
    # RunPod has flex and active for each GPU it prices; Modal one price; the local machine none
    for gpu in gpus - {"cpu"}:
        tiers = {p.tier for p in tables.prices.of(gpu, "runpod")}
        assert tiers in (set(), {"flex", "active"}), gpu
        assert len(tables.prices.of(gpu, "modal")) == 1, gpu
    assert tables.prices.of("cpu") == []
    assert tables.prices.addon("modal").usd_per_s == pytest.approx(4 * 0.0000131 + 32 * 0.00000222)


def test_calibration_rows_are_dated_and_measured_only_by_the_calibrate_command():
    table = load_calibration()
    for row in table.rows:
        assert row.date <= date.today()
        if row.kind == "measured":
            assert "--calibrate" in table.source(row.source).note, row
    assert {(r.gpu, round(r.params_b)) for r in table.rows if r.kind == "derived"} >= {
        ("L40S", 8), ("L40S", 71), ("H100", 8), ("H100", 71), ("A100-80GB", 8), ("A100-80GB", 71)}


def test_the_derived_rows_are_the_roofline_of_their_date():
    """calibration.json's derived rows are exactly what `python -m shared.planning.roofline` writes from
    gpus.json: neither edited by hand nor stale."""
    table = load_calibration()
    derived = [r for r in table.rows if r.kind == "derived"]
    assert derived
    when = derived[0].date
    key = lambda r: (r.gpu, r.params_b, r.dtype)  # noqa: E731
    assert sorted(derived, key=key) == sorted(roofline.derived_rows(when), key=key)


def write_bad(tmp_path: Path, source: Path, change) -> Path:
    doc = json.loads(source.read_text())
    change(doc)
    path = tmp_path / source.name
    path.write_text(json.dumps(doc))
    return path


def test_a_bad_price_names_the_file_and_the_field(tmp_path):
    path = write_bad(tmp_path, PRICES_FILE, lambda d: d["prices"][2].update(usd_per_s="cheap"))
    with pytest.raises(TableError) as e:
        load_prices(path)
    assert str(path) in str(e.value) and "prices.2.usd_per_s" in str(e.value)


def test_a_table_without_a_date_or_sources_is_refused(tmp_path):
    path = write_bad(tmp_path, GPUS_FILE, lambda d: d.pop("updated"))
    with pytest.raises(TableError, match="'updated'"):
        load_gpus(path)
    path = write_bad(tmp_path, CALIBRATION_FILE, lambda d: d.update(sources=[]))
    with pytest.raises(TableError, match="'sources'"):
        load_calibration(path)


def test_a_row_must_name_one_of_the_sources_and_a_known_kind(tmp_path):
    path = write_bad(tmp_path, GPUS_FILE, lambda d: d["gpus"][0].update(source="a blog"))
    with pytest.raises(TableError, match="a blog"):
        load_gpus(path)
    path = write_bad(tmp_path, GPUS_FILE, lambda d: d["gpus"][0].update(kind="guessed"))
    with pytest.raises(TableError, match=r"gpus\.0\.kind"):
        load_gpus(path)


def test_a_calibration_row_of_an_unknown_gpu_is_refused(tmp_path):
    def add(doc):
        doc["rows"].append({**doc["rows"][0], "gpu": "X100"})
    path = write_bad(tmp_path, CALIBRATION_FILE, add)
    load_calibration(path)  # alone it reads; against gpus.json it does not
    with pytest.raises(TableError, match="X100"):
        load_tables(path)


def test_with_row_replaces_the_row_of_the_same_gpu_size_and_format():
    table = load_calibration()
    first = table.rows[0]
    source = Source(name="test run", note="--calibrate, in a test")
    newer = first.model_copy(update={"prefill_tps": 1.0, "kind": "measured", "source": "test run",
                                     "date": date.today()})
    out = table.with_row(newer, source)
    assert len(out.rows) == len(table.rows)
    assert [r for r in out.rows if (r.gpu, r.params_b, r.dtype) == (first.gpu, first.params_b, first.dtype)] \
        == [newer]
    assert out.updated == date.today() and out.source("test run") == source
    extra = CalibrationRow(**{**newer.model_dump(), "params_b": 3.0})
    assert len(out.with_row(extra, source).rows) == len(table.rows) + 1
    # what it dumps reads back
    assert type(table).model_validate_json(out.dump()) == out


def test_a_decode_curve_fits_the_step_time_line():
    """Steps of 8 and 32 sequences take 0.1 s and 0.16 s: a = 0.08 s, b = 0.0025 s per sequence; 128
    sequences then take 0.4 s a step, 320 tokens/s."""
    from datetime import date

    from shared.planning.tables import CalibrationRow

    row = CalibrationRow(gpu="cpu", params_b=0.135, dtype="float32", prefill_tps=500, decode_tps=32 / 0.16,
                         concurrency=32, decode_curve=[(8, 8 / 0.1)], cold_start_s=30, kind="measured",
                         source="hand", date=date(2026, 12, 6))
    assert row.decode_tps_at(128) == pytest.approx(128 / 0.4)
    assert row.decode_tps_at(32) == pytest.approx(200)
    assert row.decode_tps_at(8) == pytest.approx(80)
    alone = row.model_copy(update={"decode_curve": []})
    assert alone.decode_tps_at(128) is None  # one point: the plan scales in proportion, below it only
