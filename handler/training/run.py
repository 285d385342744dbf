"""A training job's run, as events (README, "Fine-tuning"; shared/contracts/training.py).

    trainer = Trainer(settings)                       # one per process: it trains one job at a time
    async for event in trainer.run(work, store, stop=stop):
        ...                                           # TrainEvent ..., then one FinalEvent

A run reads the job's examples (from the store, page by page, or from an inline job), records the job
running, and then:

1. measures the base model's perplexity on the held-out split (once: a resumed run reads it back);
2. trains with trl's SFTTrainer and peft LoRA in a thread (handler/training/loop.py), publishing a
   `train` event per logged step and a `checkpoint` event per checkpoint. A job redelivered after its
   worker died resumes from its last complete checkpoint: the step count continues;
3. measures base + adapter on the held-out split, saves the adapter (safetensors), the merged model and
   the model card (handler/training/export.py), and registers the adapter in the store: a batch job can
   name it at once;
4. records the outcome, with the `TrainReport` in the summary's `training`.

A staged row that is not a training example (no assistant turn to learn) becomes an error result of its
own, and training goes on without it. `stop` ends training at the next step with a checkpoint saved
(cancel, a worker shutting down); a closed run (RunPod's /cancel) records `on_close`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from handler.runner import StopSignal
from handler.training import export, loop
from handler.training.perplexity import perplexity
from handler.training.tokenize import Encoded, encode
from shared.contracts.adapters import AdapterRecord
from shared.contracts.errors import ErrorCode, StoreError
from shared.contracts.events import Event, FinalEvent, Outcome, TrainEvent
from shared.contracts.models import Item, Job, Rejection, Result, Summary
from shared.contracts.settings import Settings
from shared.contracts.shards import ShardRef
from shared.contracts.training import TrainConfig, TrainReport, example_issues, held_out
from shared.stores.base import Store, record_outcome, retrying

log = logging.getLogger("llm_jobs.training")

#: the held-out perplexity of the base, kept in the job's directory so a resumed run does not measure it again
BASE_PPL_FILE = "base_perplexity.json"
CHECKPOINTS = "checkpoints"
#: rows read from the store at a time
PAGE = 1000


def is_training(work: Job | ShardRef) -> bool:
    return (work.job if isinstance(work, ShardRef) else work).training is not None


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (its trainer state and adapter weights written): one cut short by a
    kill is passed over."""
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), d) for d in directory.iterdir()
             if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name))]
    for _, d in sorted(found, reverse=True):
        if (d / "trainer_state.json").is_file() and (d / "adapter_model.safetensors").is_file():
            return d
    return None


class Trainer:
    """Runs training jobs in this process, one at a time (they take the whole GPU)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._one = asyncio.Semaphore(1)

    def job_dir(self, job_id: str) -> Path:
        return self.settings.training_root / job_id.replace(":", "_")

    def base(self, config: TrainConfig) -> tuple[str, str, bool]:
        """(path or hub id to load, the name an engine serves it under, hub allowed) of the job's base: the
        deployment's model, or one TRAIN_BASE_MODELS allows (ValueError otherwise: a job must not make a worker
        read any path or download any model)."""
        s = self.settings
        if config.base_model is None or config.base_model in (s.served_model, s.model_name):
            from handler.engine.vllm_engine import resolve_model

            path, served = resolve_model(s)
            return path, served, False
        if config.base_model not in s.train_base_model_list:
            raise ValueError(f"base_model {config.base_model!r} is neither this deployment's model "
                             f"({s.served_model}) nor one TRAIN_BASE_MODELS allows")
        local = Path(config.base_model).expanduser()
        if local.is_dir():
            return str(local), config.base_model, False
        return config.base_model, config.base_model, not s.hf_hub_offline

    async def run(self, work: Job | ShardRef, store: Store | None, *, stop: StopSignal | None = None,
                  on_close: Outcome | None = Outcome.cancelled) -> AsyncIterator[Event]:
        async with self._one:
            async for event in _Run(self, work, store, stop, on_close).events():
                yield event


class _Run:
    def __init__(self, trainer: Trainer, work: Job | ShardRef, store: Store | None, stop: StopSignal | None,
                 on_close: Outcome | None):
        self.trainer, self.work, self.store, self.stop, self.on_close = trainer, work, store, stop, on_close
        self.ref = work if isinstance(work, ShardRef) else None
        whole = work.options_job() if isinstance(work, ShardRef) else work
        assert whole.training is not None
        self.job, self.config = whole, whole.training
        self.job_id = whole.id
        self.total = self.ref.total if self.ref is not None else whole.total
        self.retry_s = trainer.settings.store_retry_s
        self.dir = trainer.job_dir(self.job_id)
        self.started = time.monotonic()
        self.bad = 0

    # ## Reading the examples

    async def _rows(self) -> AsyncIterator[list[Item | Rejection]]:
        if self.ref is None:
            rows: list[Item | Rejection] = [*self.job.items, *self.job.rejected]
            for k in range(0, len(rows), PAGE):
                yield rows[k:k + PAGE]
            return
        store, at = self.store, self.ref.start
        assert store is not None
        while at < self.ref.end:
            page = await retrying(lambda at=at: store.read_items(self.job_id, start_idx=at, end_idx=self.ref.end,
                                                                 limit=PAGE), within_s=self.retry_s)
            if not page:
                raise StoreError(f"job {self.job_id}: examples {at}..{self.ref.end - 1} are not staged")
            yield page
            at += len(page)

    async def _examples(self) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
        """(train, held out) as chats; a row that is no example becomes an error result."""
        train: list[list[dict[str, str]]] = []
        held: list[list[dict[str, str]]] = []
        async for page in self._rows():
            refused: list[Result] = []
            for row in page:
                why = example_issues(row)
                if why is not None:
                    code = row.code if isinstance(row, Rejection) else ErrorCode.invalid_item
                    refused.append(Result.failure(row.custom_id, code, why))
                    continue
                assert isinstance(row, Item) and row.messages
                chat = [{"role": m.role, "content": m.text()} for m in row.messages]
                (held if held_out(row.custom_id) else train).append(chat)
            if refused and self.store is not None:
                await retrying(lambda refused=refused: self.store.write(self.job_id, refused), within_s=self.retry_s)
            self.bad += len(refused)
        return train, held

    # ## The run

    def _event(self, phase: str, step: int = 0, max_steps: int = 0, **kw: Any) -> TrainEvent:
        return TrainEvent(job_id=self.job_id, phase=phase, step=step, max_steps=max_steps, **kw)  # type: ignore[arg-type]

    async def _finish(self, outcome: Outcome, summary: Summary) -> FinalEvent:
        if self.store is not None:
            await record_outcome(self.store, self.job_id, outcome, summary, retry_s=self.retry_s)
        return FinalEvent(job_id=self.job_id, outcome=outcome, summary=summary)

    def _summary(self, reason: str | None = None, *, trained: int = 0, tokens: int = 0,
                 report: TrainReport | None = None) -> Summary:
        took = time.monotonic() - self.started
        return Summary(total=self.total, completed=trained, failed=self.bad, elapsed_s=round(took, 3),
                       items_per_s=round(trained / took, 3) if took > 0 else 0, prompt_tokens=tokens,
                       completion_tokens=0, tokens_per_s=report.tokens_per_s if report else 0, reason=reason,
                       training=report.model_dump(mode="json") if report else None)

    async def events(self) -> AsyncIterator[Event]:
        s = self.trainer.settings
        if self.store is not None:
            try:
                record = self.job if self.job.model else self.job.model_copy(
                    update={"model": self.config.base_model or s.served_model})
                await retrying(lambda: self.store.begin(record, total=self.total), within_s=self.retry_s)
            except StoreError as e:
                yield FinalEvent.failed(self.job_id, f"store: {e}", total=self.total)
                return
        try:
            train_chats, held_chats = await self._examples()
        except StoreError as e:
            yield FinalEvent.failed(self.job_id, f"store: {e}", total=self.total)
            return
        if not train_chats:
            yield await self._finish(Outcome.failed, self._summary(
                f"no training examples: {self.bad} row(s) were refused (see the job's error results)"
                if self.bad else "no training examples"))
            return
        try:
            path, served, hub = self.trainer.base(self.config)
        except ValueError as e:
            yield await self._finish(Outcome.failed, self._summary(f"invalid job: {e}"))
            return
        try:
            prepared = await asyncio.to_thread(self._prepare, path, hub, train_chats, held_chats)
        except Exception as e:  # a base that will not load, a quantization this machine lacks: the job's fault
            log.exception("job=%s could not prepare training", self.job_id)
            yield await self._finish(Outcome.failed, self._summary(f"could not load {path!r}: {type(e).__name__}: {e}"))
            return
        tokenizer, train_rows, held_rows = prepared
        max_steps = self.config.planned_steps(len(train_rows))

        base_ppl = None
        if held_rows:
            base_ppl = await asyncio.to_thread(self._base_perplexity, path, hub, held_rows, tokenizer)
            yield self._event("perplexity", 0, max_steps, perplexity=round(base_ppl, 4), message="base")

        async for event in self._train(path, hub, tokenizer, train_rows, held_rows, max_steps):
            if isinstance(event, FinalEvent):
                yield event
                return
            if isinstance(event, loop.TrainRun):
                run = event
                break
            yield event
        else:  # pragma: no cover - _train always ends with a run or a final
            return

        report_ppl = None
        if held_rows:
            report_ppl = await asyncio.to_thread(self._measure, run.model, held_rows, tokenizer)
            yield self._event("perplexity", run.steps, run.max_steps, perplexity=round(report_ppl, 4),
                              message="base + adapter")
        report = TrainReport(
            adapter=self.config.adapter, base_model=served, steps=run.steps, epochs=round(run.epochs, 4),
            train_examples=len(train_rows), eval_examples=len(held_rows), train_tokens=run.tokens,
            tokens_per_s=round(run.run_tokens / run.run_s, 1) if run.run_s > 0 else 0,
            runtime_s=round(run.run_s, 2), losses=run.losses, eval_loss=run.eval_loss,
            base_perplexity=base_ppl and round(base_ppl, 4), adapter_perplexity=report_ppl and round(report_ppl, 4),
            resumed_from=run.resumed_from, adapter_dir=str(self.dir / "adapter"))
        try:
            report = await asyncio.to_thread(self._export, run, path, served, tokenizer, report, train_rows, held_rows)
        except Exception as e:
            log.exception("job=%s export failed", self.job_id)
            yield await self._finish(Outcome.failed, self._summary(f"export failed: {type(e).__name__}: {e}",
                                                                   trained=len(train_rows), report=report))
            return
        yield self._event("export", run.steps, run.max_steps, message=report.adapter_dir)
        if self.store is not None:
            rec = AdapterRecord(name=report.adapter, base_model=served, path=report.adapter_dir,
                                config=self.config.model_dump(mode="json"), metrics=report.metrics(),
                                job_id=self.job_id)
            try:
                await retrying(lambda: self.store.put_adapter(rec), within_s=self.retry_s)
            except StoreError as e:
                yield await self._finish(Outcome.failed, self._summary(
                    f"the adapter is saved in {report.adapter_dir} but could not be registered: {e}",
                    trained=len(train_rows), report=report))
                return
        yield await self._finish(Outcome.completed, self._summary(trained=len(train_rows), tokens=run.tokens,
                                                                  report=report))

    async def _train(self, path: str, hub: bool, tokenizer: Any, train_rows: list[Encoded],
                     held_rows: list[Encoded], max_steps: int) -> AsyncIterator[Event | loop.TrainRun]:
        """Training in a thread, its events bridged onto this loop; ends with the TrainRun, or a final."""
        loop_ = asyncio.get_running_loop()
        events: asyncio.Queue[TrainEvent] = asyncio.Queue()
        flag = threading.Event()
        checkpoints = self.dir / CHECKPOINTS
        resume = await asyncio.to_thread(last_checkpoint, checkpoints)
        if resume is not None:
            yield self._event("resume", int(resume.name.split("-")[1]), max_steps, message=resume.name)

        def emit(ev: TrainEvent) -> None:
            loop_.call_soon_threadsafe(events.put_nowait, ev)

        def work() -> loop.TrainRun:
            model = loop.load_base(path, self.trainer.settings.train_dtype, quantize=self.config.quantize,
                                   local_only=not hub)
            return loop.train(self.job_id, self.config, model, tokenizer, train_rows, held_rows, checkpoints,
                              emit=emit, stop=flag, dtype=self.trainer.settings.train_dtype, resume_from=resume)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        watcher = asyncio.ensure_future(self.stop.wait()) if self.stop is not None else None
        try:
            while not task.done() or not events.empty():
                waiting = [t for t in (task, watcher) if t is not None and not t.done()]
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait([getter, *waiting], return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
                if watcher is not None and watcher.done():
                    flag.set()
        except (asyncio.CancelledError, GeneratorExit):
            flag.set()  # the thread saves a checkpoint at its next step and ends
            await asyncio.shield(asyncio.gather(task, return_exceptions=True))
            if self.on_close is not None:
                reason = f"{self.on_close.value} at the next step; the last checkpoint is kept: the job submitted " \
                         "again resumes from it"
                await asyncio.shield(self._finish(self.on_close, self._summary(reason)))
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        try:
            run = task.result()
        except Exception as e:
            log.exception("job=%s training failed", self.job_id)
            yield await self._finish(Outcome.failed, self._summary(f"training failed: {type(e).__name__}: {e}"))
            return
        if run.stopped:
            outcome = self.stop.outcome if self.stop is not None else Outcome.stopped
            summary = self._summary("cancelled; the last checkpoint is kept" if outcome is Outcome.cancelled else
                                    f"stopped at step {run.steps}; a re-run resumes from its checkpoint")
            if self.stop is not None and not self.stop.record:
                yield FinalEvent(job_id=self.job_id, outcome=outcome, summary=summary)
            else:
                yield await self._finish(outcome, summary)
            return
        yield run

    # ## Blocking parts (threads)

    def _prepare(self, path: str, hub: bool, train: list[list[dict[str, str]]], held: list[list[dict[str, str]]]
                 ) -> tuple[Any, list[Encoded], list[Encoded]]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=not hub)
        only = self.config.assistant_only_loss
        return (tokenizer, [encode(tokenizer, c, assistant_only=only) for c in train],
                [encode(tokenizer, c, assistant_only=True) for c in held])

    def _measure(self, model: Any, rows: list[Encoded], tokenizer: Any) -> float:
        return perplexity(model, rows, max_len=self.config.max_seq_len, batch_size=self.config.batch_size,
                          pad_id=tokenizer.pad_token_id or 0)

    def _base_perplexity(self, path: str, hub: bool, rows: list[Encoded], tokenizer: Any) -> float:
        kept = self.dir / BASE_PPL_FILE
        if kept.is_file():
            return float(json.loads(kept.read_text())["perplexity"])
        model = loop.load_base(path, self.trainer.settings.train_dtype, quantize=self.config.quantize,
                               local_only=not hub)
        value = self._measure(model, rows, tokenizer)
        del model
        gc.collect()
        self.dir.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({"perplexity": value}))
        return value

    def _export(self, run: loop.TrainRun, path: str, served: str, tokenizer: Any, report: TrainReport,
                train_rows: list[Encoded], held_rows: list[Encoded]) -> TrainReport:
        adapter_dir = export.save_adapter(run.model, tokenizer, self.dir / "adapter", served)
        merged_dir = None
        run.model = None  # let the trained model go before the base is loaded again to merge
        gc.collect()
        if self.config.merge:
            merged_dir = export.merge(path, adapter_dir, tokenizer, self.dir / "merged",
                                      dtype=self.trainer.settings.train_dtype)
        report = report.model_copy(update={"adapter_dir": str(adapter_dir),
                                           "merged_dir": str(merged_dir) if merged_dir else None,
                                           "model_card": str(adapter_dir / "README.md")})
        data = {"training examples": len(train_rows), "held-out examples": len(held_rows),
                "refused rows": self.bad, "training tokens (one pass)": sum(r.tokens for r in train_rows),
                "assistant tokens (one pass)": sum(r.assistant_tokens for r in train_rows)}
        card = export.model_card(report, self.config, data)
        for d in (adapter_dir, merged_dir):
            if d is not None:
                (d / "README.md").write_text(card, encoding="utf-8")
        return report
