"""The training itself: trl's SFTTrainer with a peft LoRA adapter, in the calling thread.

`train` blocks for as long as training runs: `handler/training/run.py` calls it in a thread and reads
what it reports through `emit`, a callable that must be safe to call from this thread. Setting `stop`
ends training at the next step, after a checkpoint is saved (cancel, a worker shutting down).

Checkpoints go to `<job dir>/checkpoints/checkpoint-<step>` every `save_steps`; `resume_from` names
the one a redelivered job continues from (the step count continues: global step, optimizer,
scheduler, data order and RNG come back with it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.training.tokenize import Encoded
from shared.contracts.events import TrainEvent
from shared.contracts.training import TrainConfig

log = logging.getLogger("llm_jobs.training")

Emit = Callable[[TrainEvent], None]


@dataclass(slots=True)
class TrainRun:
    """What one call of `train` did."""

    steps: int
    max_steps: int
    epochs: float
    #: tokens seen over all runs of the job (checkpoints carry the count), and in this run
    tokens: int
    run_tokens: int
    run_s: float
    losses: list[tuple[int, float]]
    eval_loss: float | None
    #: the step this run resumed from (None: from the start)
    resumed_from: int | None
    #: stopped at `stop`'s request, a checkpoint saved
    stopped: bool
    #: the trained model (a peft model): what the adapter is saved from (None once it is let go)
    model: Any


def quiet() -> None:
    """No progress bars from datasets' preparation steps in a worker's log."""
    import datasets

    datasets.disable_progress_bars()


def _cpu_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16, AMX)? Then bf16 mixed precision is faster there."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision(name: str) -> tuple[Any, bool, bool]:
    """(the dtype the base's weights load in, bf16 mixed precision, fp16 mixed precision) for TRAIN_DTYPE.

    "auto" is trl's own default, bf16 mixed precision, where the hardware has bf16: a GPU's, or a CPU's
    AVX512-BF16 or AMX (weights stay float32 there); fp16 on an older GPU; float32 elsewhere."""
    import torch

    gpu = torch.cuda.is_available()
    gpu_bf16 = gpu and torch.cuda.is_bf16_supported()
    if name == "auto":
        if gpu:
            return (torch.bfloat16, True, False) if gpu_bf16 else (torch.float16, False, True)
        return torch.float32, _cpu_bf16(), False
    if name == "float32":
        return torch.float32, False, False
    if name == "bfloat16":
        return (torch.bfloat16 if gpu_bf16 else torch.float32), True, False
    if not gpu:
        raise ValueError("TRAIN_DTYPE=float16 needs a CUDA GPU (mixed fp16 does not run on CPU)")
    return torch.float16, False, True


def load_base(path: str, dtype: str, *, quantize: str = "none", local_only: bool = True) -> Any:
    """The base model for training or measuring; `quantize="4bit"` is QLoRA's NF4 (bitsandbytes, CUDA)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": precision(dtype)[0], "local_files_only": local_only}
    if quantize == "4bit":
        if not torch.cuda.is_available():
            raise ValueError("quantize '4bit' (QLoRA) needs a CUDA GPU and bitsandbytes; use 'none' on CPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=kwargs["dtype"],
                                                           bnb_4bit_use_double_quant=True)
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def dataset(rows: list[Encoded]) -> Any:
    """A pre-tokenized dataset: SFTTrainer builds labels from `assistant_masks` and truncates to max_length."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [r.input_ids for r in rows],
                              "assistant_masks": [r.assistant_masks for r in rows]})


def sft_config(config: TrainConfig, out_dir: Path, *, has_eval: bool, dtype: str) -> Any:
    """trl's SFTConfig for `config` (shared by `llm-jobs train` and benchmarks/train.py's plain script)."""
    import torch
    from trl import SFTConfig

    _, bf16, fp16 = precision(dtype)
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = torch.cuda.is_available()
    return SFTConfig(
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        output_dir=str(out_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the steps (transformers 5)
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_seq_len,
        eval_strategy="steps" if has_eval and config.eval_steps else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM", bias="none")


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _events_callback(job_id: str, emit: Emit, stop: threading.Event, losses: list[tuple[int, float]],
                     seen: dict[str, Any]) -> Any:
    from transformers import TrainerCallback

    class Events(TrainerCallback):
        """Publishes each logged step as a TrainEvent, and stops at the next step when asked."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            seen.update(t0=time.perf_counter(), step0=state.global_step, tokens0=state.num_input_tokens_seen)

        def _pace(self, state: Any) -> tuple[float | None, float | None]:
            took = time.perf_counter() - seen["t0"]
            done = state.global_step - seen["step0"]
            rate = (state.num_input_tokens_seen - seen["tokens0"]) / took if took > 0 else None
            eta = took / done * (state.max_steps - state.global_step) if done > 0 else None
            return rate, eta

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kw: Any) -> None:
            logs = logs or {}
            rate, eta = self._pace(state)
            base = {"job_id": job_id, "step": state.global_step, "max_steps": state.max_steps,
                    "epoch": _finite(state.epoch), "tokens_per_s": rate and round(rate, 1),
                    "eta_s": eta and round(eta, 1)}
            if "loss" in logs and _finite(logs["loss"]) is not None:
                losses.append((state.global_step, float(logs["loss"])))
                emit(TrainEvent(phase="train", loss=_finite(logs["loss"]),
                                learning_rate=_finite(logs.get("learning_rate")),
                                grad_norm=_finite(logs.get("grad_norm")), **base))
            if "eval_loss" in logs:
                seen["eval_loss"], seen["eval_step"] = _finite(logs["eval_loss"]), state.global_step
                emit(TrainEvent(phase="eval", eval_loss=seen["eval_loss"], **base))

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            emit(TrainEvent(job_id=job_id, phase="checkpoint", step=state.global_step, max_steps=state.max_steps,
                            epoch=_finite(state.epoch), message=f"checkpoint-{state.global_step}"))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if stop.is_set():  # save what we have, then end: the next run resumes here
                seen["stopped"] = True
                control.should_save = True
                control.should_training_stop = True

    return Events()


def train(job_id: str, config: TrainConfig, model: Any, tokenizer: Any, train_rows: list[Encoded],
          eval_rows: list[Encoded], out_dir: Path, *, emit: Emit, stop: threading.Event, dtype: str = "auto",
          resume_from: Path | None = None) -> TrainRun:
    """Train `model` (the base, loaded with `load_base`) on `train_rows`; blocks until done or stopped."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    quiet()
    losses: list[tuple[int, float]] = []
    seen: dict[str, Any] = {}
    args = sft_config(config, out_dir, has_eval=bool(eval_rows), dtype=dtype)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset(train_rows),
                         eval_dataset=dataset(eval_rows) if eval_rows else None, processing_class=tokenizer,
                         peft_config=lora_config(config),
                         callbacks=[_events_callback(job_id, emit, stop, losses, seen)])
    trainer.remove_callback(PrinterCallback)  # our events say it; it would print every log to stdout
    if resume_from is not None:
        log.info("job=%s resuming from %s", job_id, resume_from.name)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    run_s = time.perf_counter() - started
    state = trainer.state
    stopped = bool(seen.get("stopped"))
    eval_loss = seen.get("eval_loss")
    if eval_rows and not stopped and seen.get("eval_step") != state.global_step:  # the held-out loss at the end
        trainer.evaluate()  # its on_log publishes it
        eval_loss = seen.get("eval_loss")
    return TrainRun(steps=state.global_step, max_steps=state.max_steps, epochs=float(state.epoch or 0),
                    tokens=int(state.num_input_tokens_seen), run_tokens=int(state.num_input_tokens_seen
                                                                             - seen.get("tokens0", 0)),
                    run_s=run_s, losses=losses, eval_loss=eval_loss,
                    resumed_from=seen.get("step0") or None, stopped=stopped, model=trainer.model)
