"""What a finished training job leaves behind (issue 16, "Export").

    <job dir>/adapter/   adapter_model.safetensors + adapter_config.json (PEFT): what batch jobs name
    <job dir>/merged/    the base with the adapter merged in (`merge_and_unload`): vLLM loads it as a plain model
    README.md            in both: the model card (base, data, config, metrics)

Blocking file and torch work: call these in a thread.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from shared.contracts.training import TrainConfig, TrainReport


def save_adapter(model: Any, tokenizer: Any, out: Path, base_name: str) -> Path:
    """The trained adapter's weights and config, in safetensors, with the tokenizer beside it (its chat
    template travels with it). `base_name` is written as its base model: what engines match it against."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config = out / "adapter_config.json"
    doc = json.loads(config.read_text(encoding="utf-8"))
    doc["base_model_name_or_path"] = base_name
    config.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    return out


def merge(base_path: str, adapter_dir: Path, tokenizer: Any, out: Path, *, dtype: str) -> Path:
    """Base + adapter as one model, written with its tokenizer and generation config: a directory vLLM
    serves as a plain model. The base is loaded afresh (a QLoRA base is 4-bit: merging needs real weights)."""
    from peft import PeftModel

    from handler.training.loop import load_base

    base = load_base(base_path, dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del merged, base
    gc.collect()
    return out


def _figure(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def model_card(report: TrainReport, config: TrainConfig, data: dict[str, Any]) -> str:
    """A model card in Hugging Face's format: YAML front matter, then what it is, how it was made and
    what it measured."""
    m = report.metrics()
    rows = [("steps", m["steps"]), ("epochs", round(m["epochs"], 3)), ("first logged loss", m["first_loss"]),
            ("last logged loss", m["last_loss"]), ("held-out loss", m["eval_loss"]),
            ("held-out perplexity, base", m["base_perplexity"]),
            ("held-out perplexity, base + adapter", m["adapter_perplexity"]),
            ("training tokens", m["train_tokens"]), ("tokens/s", m["tokens_per_s"]),
            ("training time (s)", m["runtime_s"])]
    data_rows = "\n".join(f"| {k} | {_figure(v)} |" for k, v in data.items())
    metric_rows = "\n".join(f"| {k} | {_figure(v)} |" for k, v in rows)
    settings = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)
    return f"""---
base_model: {json.dumps(report.base_model)}
library_name: peft
pipeline_tag: text-generation
tags: [llm-jobs, lora, sft, trl]
---

# {report.adapter}

A LoRA adapter (rank {config.lora.r}, alpha {config.lora.alpha}) over `{report.base_model}`, trained by an
llm-jobs training job with trl's SFTTrainer{", loss on the assistant's turns only" if config.assistant_only_loss
                                             else ""}.

Serve it in a batch job with `"adapter": "{report.adapter}"`, or load the merged model (`merged/`) as a
plain model.

## Data

| | |
|---|---|
{data_rows}

## Results

| | |
|---|---|
{metric_rows}

Perplexity is measured on the held-out split's assistant tokens, before and after training.

## Training configuration

```json
{settings}
```
"""
