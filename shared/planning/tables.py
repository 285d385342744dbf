"""The planner's data: GPUs, prices and throughput, each a dated JSON file beside this module that names its
sources.

Every row names its `source` (one of the file's `sources`) and its `kind`:

- `measured`: run here, by `python -m benchmarks.throughput --calibrate` (or read from this machine);
- `published`: a vendor's own figure (a datasheet, a pricing page);
- `derived`: computed from published figures by a formula its source's note states (shared/planning/roofline.py).

An estimate is never `measured`. A table that does not read raises `TableError`, naming the file and the field.
The calibration table's path can be given (`load_calibration(path)`): `--calibrate` writes one file, and the
planner may read another.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

HERE = Path(__file__).resolve().parent
GPUS_FILE, PRICES_FILE, CALIBRATION_FILE = HERE / "gpus.json", HERE / "prices.json", HERE / "calibration.json"

Kind = Literal["measured", "published", "derived"]
Platform = Literal["runpod", "modal"]
Tier = Literal["flex", "active"]
#: the name of the local machine in the tables: no price, its own calibration row
CPU = "cpu"


class TableError(ValueError):
    """A table that does not load: the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    name: str = Field(min_length=1)
    #: where to check it (empty for a measurement on this machine)
    url: str = ""
    #: what it says, how a figure was derived, when it was read
    note: str = ""


class _Row(_Strict):
    kind: Kind
    #: the name of one of the file's sources
    source: str = Field(min_length=1)
    note: str = ""


class GpuSpec(_Row):
    """One accelerator (or `cpu`, the local machine)."""

    name: str = Field(min_length=1)
    memory_gib: float = Field(gt=0)
    #: memory bandwidth, GB/s, and dense bf16 tensor TFLOPS (no sparsity); None where no datasheet says (cpu)
    bandwidth_gbs: float | None = Field(default=None, gt=0)
    bf16_tflops: float | None = Field(default=None, gt=0)
    #: a fixed KV cache space instead of what the weights leave (vLLM's CPU backend: CPU_KVCACHE_SPACE_GIB)
    kv_cache_gib: float | None = Field(default=None, gt=0)


class Price(_Row):
    """USD per second of one GPU on a platform's serverless tier."""

    gpu: str
    platform: Platform
    #: RunPod's flex (scales to zero) or active (always on) workers; None on Modal
    tier: Tier | None = None
    usd_per_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _tier(self) -> Price:
        if (self.platform == "runpod") != (self.tier is not None):
            raise ValueError("tier is flex or active on runpod, and absent on modal")
        return self


class Addon(_Row):
    """What a platform bills per container beside its GPUs: CPU cores and memory."""

    platform: Platform
    cpu_cores: float = Field(ge=0)
    memory_gib: float = Field(ge=0)
    usd_per_core_s: float = Field(ge=0)
    usd_per_gib_s: float = Field(ge=0)

    @property
    def usd_per_s(self) -> float:
        return self.cpu_cores * self.usd_per_core_s + self.memory_gib * self.usd_per_gib_s


class CalibrationRow(_Row):
    """Throughput of one engine on one GPU type, for one model size and weight format."""

    gpu: str
    #: the model it was measured or derived for (a name), and its size in billions of parameters
    model: str | None = None
    params_b: float = Field(gt=0)
    #: the weights' format (shared/planning/fit.py BYTES_PER_PARAM)
    dtype: str
    #: the GPUs the engine spanned
    tp: int = Field(default=1, ge=1)
    #: prompt tokens per second (a prefill-only pass), and generated tokens per second, both over the whole engine
    prefill_tps: float = Field(gt=0)
    decode_tps: float = Field(gt=0)
    #: the sequences in flight at which decode_tps holds
    concurrency: int = Field(ge=1)
    #: decode tokens/s measured at other numbers of sequences in flight, as [sequences, tokens/s] pairs; with them,
    #: a decode step's time is fitted as a + b x sequences (`decode_tps_at`), so a plan can go above `concurrency`
    decode_curve: list[tuple[int, float]] = Field(default_factory=list)
    #: a fresh worker until its engine serves: container start, weights read, engine built
    cold_start_s: float = Field(ge=0)
    date: date


    def decode_tps_at(self, sequences: int) -> float | None:
        """Decode tokens/s with `sequences` in flight, from the step-time line fitted (least squares) through
        (concurrency, decode_tps) and `decode_curve`: a step of B sequences takes a + b x B seconds and yields B
        tokens. None with fewer than two distinct points (then only `concurrency` is known)."""
        points = {self.concurrency: self.decode_tps, **dict(self.decode_curve)}
        if len(points) < 2 or sequences < 1:
            return None
        xs = list(points)
        ys = [b / tps for b, tps in points.items()]  # seconds per step
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
        slope = max(slope, 0.0)  # a step never gets quicker with more sequences
        fixed = max(my - slope * mx, 0.0)
        step = fixed + slope * sequences
        return sequences / step if step > 0 else None


class _Table(_Strict):
    updated: date
    sources: list[Source] = Field(min_length=1)

    def _rows(self) -> list[_Row]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _sources_named(self) -> _Table:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("two sources have the same name")
        for row in self._rows():
            if row.source not in names:
                raise ValueError(f"source '{row.source}' is not one of the file's sources")
        return self

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)


class GpuTable(_Table):
    gpus: list[GpuSpec] = Field(min_length=1)

    def _rows(self) -> list[_Row]:
        return list(self.gpus)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gpus]

    def get(self, name: str) -> GpuSpec | None:
        """The GPU of that name, in any letter case."""
        return next((g for g in self.gpus if g.name.lower() == name.lower()), None)


class PriceTable(_Table):
    prices: list[Price]
    addons: list[Addon] = Field(default_factory=list)

    def _rows(self) -> list[_Row]:
        return [*self.prices, *self.addons]

    def of(self, gpu: str, platform: str | None = None) -> list[Price]:
        return [p for p in self.prices if p.gpu == gpu and (platform is None or p.platform == platform)]

    def addon(self, platform: str) -> Addon | None:
        return next((a for a in self.addons if a.platform == platform), None)


class CalibrationTable(_Table):
    rows: list[CalibrationRow]

    def _rows(self) -> list[_Row]:
        return list(self.rows)

    def of(self, gpu: str) -> list[CalibrationRow]:
        return [r for r in self.rows if r.gpu == gpu]

    def with_row(self, row: CalibrationRow, source: Source) -> CalibrationTable:
        """This table with `row` in place of any row of the same GPU, size and format, its source added or
        replaced, and `updated` set to the row's date."""
        rows = [r for r in self.rows if (r.gpu, round(r.params_b, 3), r.dtype)
                != (row.gpu, round(row.params_b, 3), row.dtype)]
        sources = [s for s in self.sources if s.name != source.name]
        return CalibrationTable(updated=max(self.updated, row.date), sources=[*sources, source],
                                rows=sorted([*rows, row], key=lambda r: (r.gpu, r.params_b, r.dtype)))

    def dump(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


class Tables(_Strict):
    """The three tables, checked against each other: every priced or calibrated GPU is in gpus.json."""

    gpus: GpuTable
    prices: PriceTable
    calibration: CalibrationTable

    @model_validator(mode="after")
    def _known_gpus(self) -> Tables:
        known = set(self.gpus.names)
        for what, names in (("prices", {p.gpu for p in self.prices.prices}),
                            ("calibration", {r.gpu for r in self.calibration.rows})):
            unknown = sorted(names - known)
            if unknown:
                raise ValueError(f"{what}: GPU(s) {', '.join(unknown)} not in gpus.json")
        return self

    def describe(self) -> list[TableInfo]:
        return [TableInfo(name=name, updated=t.updated, sources=list(t.sources))
                for name, t in (("gpus", self.gpus), ("prices", self.prices), ("calibration", self.calibration))]


class TableInfo(BaseModel):
    """A table's date and sources, as a plan reports them."""

    name: str
    updated: date
    sources: list[Source]


T = TypeVar("T", bound=BaseModel)


def _load(model: type[T], path: Path) -> T:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TableError(f"{path}: cannot read it: {e}") from e
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        problems = "; ".join(f"field '{'.'.join(str(p) for p in err['loc']) or '(top)'}': {err['msg']}"
                             for err in e.errors()[:5])
        raise TableError(f"{path}: {problems}") from None


def load_gpus(path: Path | None = None) -> GpuTable:
    return _load(GpuTable, path or GPUS_FILE)


def load_prices(path: Path | None = None) -> PriceTable:
    return _load(PriceTable, path or PRICES_FILE)


def load_calibration(path: Path | None = None) -> CalibrationTable:
    return _load(CalibrationTable, path or CALIBRATION_FILE)


def load_tables(calibration: Path | None = None, *, gpus: Path | None = None, prices: Path | None = None) -> Tables:
    """All three, checked against each other (TableError names what does not match)."""
    try:
        return Tables(gpus=load_gpus(gpus), prices=load_prices(prices), calibration=load_calibration(calibration))
    except ValidationError as e:
        raise TableError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
