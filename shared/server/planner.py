"""`POST /v1/plan`'s work: a submitted job's plan, without running it (docs/architecture.md, "Planning").

The job is read and validated as a submit reads it (shared/server/api/intake.py). Its prompt tokens are counted
with the served model's tokenizer and chat template (handler/engine/tokens.py), in a worker thread, within the
validation budget; a job of an uploaded file is read from the store a page at a time. The model (its tokenizer
and shape) is looked up once per process; where its tokenizer cannot be loaded here (an API with no model files),
prompt tokens are estimated from characters, and the plan says so. The tables are the package's
(shared/planning/*.json), loaded once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from handler.engine.tokens import PlanModel, TokenCounter, plan_model
from shared.contracts.errors import ConfigError, InputError, Issue
from shared.contracts.models import Item, Job, JobOptions
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings
from shared.planning.options import Quantization, plan_options
from shared.planning.plan import Plan, Platform, TokenCounts, UnknownGpu, make_plan
from shared.planning.tables import TableError, Tables, load_tables
from shared.stores import Store

T = TypeVar("T")


class Planner:
    def __init__(self, settings: Settings, store: Store, limits: Limits):
        self.settings, self.store, self.limits = settings, store, limits
        self._model: PlanModel | None = None
        self._tables: Tables | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> tuple[PlanModel, Tables]:
        """The model and the tables, loaded on first use (in a thread: files, maybe transformers)."""
        async with self._lock:
            if self._model is None or self._tables is None:
                try:
                    self._tables = await asyncio.to_thread(load_tables)
                    self._model = await asyncio.to_thread(plan_model, self.settings)
                except (TableError, ValueError, OSError) as e:  # UnknownModel is a ValueError
                    raise ConfigError(f"cannot plan here: {e}") from e
            return self._model, self._tables

    async def plan(self, job: Job | tuple[JobOptions, str], *, gpus: list[str] | None, platform: Platform | None,
                   workers: int, quantization: Quantization | None, owner: str | None,
                   run: Callable[[Callable[[], T]], object]) -> Plan:
        """The plan of `job` (a Job, or (options, file id) for a job of an uploaded file). `run` runs a blocking
        call in a worker thread (the intake's, so plans share its slots). Raises InputError for a bad job, a GPU
        name no table knows, or a file that is not there; ConfigError when this server cannot plan."""
        model, tables = await self._ready()
        if isinstance(job, tuple):
            counts = await self._count_file(*job, model=model, owner=owner, run=run)
            options_job = job[0]
        else:
            counts = await run(lambda: self._count(job, model))  # type: ignore[arg-type,assignment]
            options_job = job
        try:
            options = plan_options(self.settings, model=model.name, gpus=gpus, platform=platform, workers=workers,
                                   quantization=quantization, max_tokens=options_job.sampling.max_tokens)
            return make_plan(counts, model.spec, options, tables)  # type: ignore[arg-type]
        except UnknownGpu as e:
            raise InputError([Issue(f"{e}; known: {', '.join(tables.gpus.names)}", field="gpus")]) from None

    def _count(self, job: Job, model: PlanModel) -> TokenCounts:
        counter = self._counter(job, model)
        deadline = time.monotonic() + self.settings.validation_timeout_s
        for k in range(0, len(job.items), 500):
            counter.add(job.items[k:k + 500])
            _within(deadline, self.settings.validation_timeout_s)
        counter.add([], rejected=len(job.rejected))
        return counter.counts(model.name)

    def _counter(self, job: Job, model: PlanModel) -> TokenCounter:
        return TokenCounter(job, model.tokenizer, limits=self.limits, any_model=True)

    async def _count_file(self, options: JobOptions, file_id: str, *, model: PlanModel, owner: str | None,
                          run: Callable[[Callable[[], T]], object]) -> TokenCounts:
        file = await self.store.get_file(file_id)
        if file is None or (owner is not None and file.owner != owner):  # not theirs: not there
            raise InputError([Issue(f"no file {file_id!r}", field="input_file_id")])
        if file.status != "processed":
            raise InputError([Issue(f"file {file_id!r} is {file.status}", field="input_file_id")])
        job = Job.model_validate(options.model_dump(by_alias=True))
        counter: TokenCounter = await run(lambda: self._counter(job, model))  # type: ignore[assignment]
        deadline = time.monotonic() + self.settings.validation_timeout_s
        at, page_size = 0, self.settings.read_page_items
        while at < file.lines:
            page = await self.store.read_file_lines(file_id, start_idx=at, limit=page_size)
            if not page:
                break
            items = [row for row in page if isinstance(row, Item)]  # a Rejection never runs
            refused = len(page) - len(items)
            await run(lambda items=items, refused=refused: counter.add(items, rejected=refused))
            _within(deadline, self.settings.validation_timeout_s)
            at += len(page)
        return counter.counts(model.name)


def _within(deadline: float, budget: float) -> None:
    if time.monotonic() > deadline:
        raise InputError([Issue(f"counting the job's tokens took over {budget:g} s (VALIDATION_TIMEOUT_S); plan "
                                "a sample of its items, or use `llm-jobs plan` where there is no budget")])
