"""Training throughput of `llm-jobs train` against the same SFTTrainer run as a plain script (issue 16).

    python -m benchmarks.train [--steps 20] [--batch-size 4] [--rounds 2] [--data examples/training/grades_ca.jsonl]

Both train the same LoRA (the same TrainConfig: rank, learning rate, schedule, batch, steps, seed) on the
same examples of the embedded SmolLM2-135M, on this machine:

- **llm-jobs**: a training job through `Trainer.run` (handler/training/run.py) with a SQLite store: its
  examples read from the job, tokenized with their assistant masks, trained with its callbacks (events,
  checkpoints, the stop check); only the training itself is timed (base perplexity and export are not
  training), exactly as its report's `tokens_per_s` says;
- **plain**: trl's documented recipe written out by hand: a conversational prompt-completion dataset, trl's
  own tokenization, `SFTTrainer(...).train()`.

Tokens/s is the non-padding tokens the trainer saw over the seconds `train()` took. Both train with
TRAIN_DTYPE=auto's precision, trl's default: bf16 mixed precision where the hardware has bf16 (this CPU's
AVX512-BF16), float32 weights. One short untimed run of each warms the process up (the first training in a
thread pays for its thread's OpenMP and oneDNN start); then each round runs both, back to back, in turns
(plain first, then llm-jobs first), and the figure is the median of the rounds' ratios, measured in one
run. The issue asks for at least 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from handler.training import loop
from handler.training.run import Trainer
from shared.contracts.inputs import parse_job_document
from shared.contracts.settings import Settings
from shared.contracts.training import TrainConfig, TrainReport
from shared.sdk._training import training_document
from shared.stores.sqlite import SQLiteStore

DATA = Path(__file__).resolve().parents[1] / "examples" / "training" / "grades_ca.jsonl"


def chats(path: Path, n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [[{"role": "system", "content": r["system"]}, {"role": "user", "content": r["prompt"]},
             {"role": "assistant", "content": r["completion"]}] for r in rows]


def plain(model_path: str, examples: list[list[dict[str, str]]], config: TrainConfig, out: Path) -> float:
    """trl's recipe as a user would write it; tokens/s of `train()`."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in examples])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")
    args = SFTConfig(output_dir=str(out), max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
                     gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
                     lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,
                     max_length=config.max_seq_len, logging_steps=config.logging_steps, save_steps=config.save_steps,
                     save_total_limit=2, seed=config.seed, data_seed=config.seed, use_cpu=True, report_to=[],
                     disable_tqdm=True, include_num_input_tokens_seen="non_padding")
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=config.lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    return trainer.state.num_input_tokens_seen / (time.perf_counter() - started)


async def ours(settings: Settings, data: Path, config: TrainConfig, job_id: str) -> TrainReport:
    """A training job of `data`'s chats through the Trainer; its report (tokens/s of the training itself)."""
    doc = training_document(data, adapter=f"bench-{job_id}", id=job_id, **config.model_dump(exclude={"adapter"}))
    store = SQLiteStore(settings.sqlite_path)
    try:
        final = None
        async for event in Trainer(settings).run(parse_job_document(doc), store):
            final = event
        assert final is not None and final.type == "final" and final.outcome == "completed", final
        return TrainReport.model_validate(final.summary.training)
    finally:
        await store.close()


async def main(data: Path, steps: int, batch_size: int, rounds: int, examples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(_env_file=None, sqlite_path=root / "jobs.db", training_dir=root / "training")
        config = TrainConfig(adapter="bench", max_steps=steps, batch_size=batch_size, learning_rate=1e-3,
                             save_steps=max(steps // 2, 1), logging_steps=5, merge=False)
        # the same examples for both: prompt/completion lines turned into chats, no held-out split
        converted = root / "train.jsonl"
        rows = chats(data, examples)
        converted.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in rows))
        model_path = Trainer(settings).base(config)[0]
        loop.quiet()
        warm = config.model_copy(update={"max_steps": 2, "save_steps": 2})
        await asyncio.to_thread(plain, model_path, rows, warm, root / "plain-warm")
        await ours(settings, converted, warm, "bench-warm")
        ratios = []
        for k in range(rounds):
            async def run_plain(k: int = k) -> float:
                return await asyncio.to_thread(plain, model_path, rows, config, root / f"plain-{k}")

            if k % 2 == 0:
                plain_tps = await run_plain()
                report = await ours(settings, converted, config, f"bench-{k}")
            else:
                report = await ours(settings, converted, config, f"bench-{k}")
                plain_tps = await run_plain()
            ratios.append(report.tokens_per_s / plain_tps)
            print(f"round {k + 1}: plain {plain_tps:,.1f} tokens/s, llm-jobs {report.tokens_per_s:,.1f} tokens/s, "
                  f"ratio {ratios[-1]:.3f} ({report.train_tokens:,} tokens, {report.steps} steps)", flush=True)
        print(f"\nllm-jobs train / plain SFTTrainer: {statistics.median(ratios):.3f} (median of {rounds} rounds; "
              f"{steps} steps, batch {batch_size}, {examples} examples, CPU)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="prompt/completion JSONL (with a system field)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--examples", type=int, default=120)
    a = parser.parse_args()
    asyncio.run(main(a.data, a.steps, a.batch_size, a.rounds, a.examples))
