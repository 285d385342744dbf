"""Training jobs (issue 16): a LoRA fine-tune is a kind of job (README, "Fine-tuning").

A training job is a `Job` whose `training` is a `TrainConfig`. Its items are the examples, staged in
the store like any job's: chat examples (`messages` that end with an assistant turn). An item whose
custom_id starts with `eval-` is held out (perplexity before and after, eval loss while training); the
rest are trained on. `llm-jobs data prepare` writes both splits with those ids.

It goes through the same lifecycle, queue, API, SDK and CLI as an inference job, runs whole (one
shard), streams `TrainEvent`s (step, loss, eval loss, learning rate, tokens/s, ETA), and ends with a
`final` whose summary carries the `TrainReport`. Everything here is plain pydantic: no torch, no trl.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.contracts.ids import ID_PATTERN

if TYPE_CHECKING:
    from shared.contracts.models import Item, Rejection

#: the custom_id prefix of a held-out example; every other example is trained on
EVAL_PREFIX = "eval-"
TRAIN_PREFIX = "train-"
#: a module name LoRA may target: `q_proj`, `model.layers.0.mlp.up_proj`
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")


def held_out(custom_id: str) -> bool:
    """Is the example with this custom_id in the held-out split?"""
    return custom_id.startswith(EVAL_PREFIX)


class LoraSpec(BaseModel):
    """The adapter's shape (peft's LoraConfig)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, le=256)
    alpha: int = Field(default=32, ge=1, le=4096)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    #: module names, or "all-linear" (every linear layer but the output head)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str):
            return v
        if not 1 <= len(v) <= 64:
            raise ValueError("name 1 to 64 modules, or 'all-linear'")
        bad = [m for m in v if not _MODULE.match(m)]
        if bad:
            raise ValueError(f"not a module name: {bad[0][:80]!r}")
        return list(dict.fromkeys(v))


class TrainConfig(BaseModel):
    """What a training job trains, checked before anything runs. Unset fields take the defaults shown."""

    model_config = ConfigDict(extra="forbid")

    #: the name the adapter is registered under (`adapter` in a batch job)
    adapter: str = Field(pattern=ID_PATTERN)
    #: the base model: a hub id or a local directory; None: the deployment's model (MODEL_NAME)
    base_model: str | None = Field(default=None, min_length=1, max_length=4096)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, le=0.5)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000)
    #: passes over the training split (ignored when max_steps is set)
    epochs: float = Field(default=1.0, gt=0, le=100)
    #: optimizer steps; None: `epochs` decides
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    #: examples per device step, and steps per optimizer step
    batch_size: int = Field(default=4, ge=1, le=512)
    grad_accum: int = Field(default=1, ge=1, le=1024)
    #: longer examples are cut (`llm-jobs data prepare` warns about them)
    max_seq_len: int = Field(default=2048, ge=16, le=131_072)
    #: eval loss on the held-out split every N steps (None: at the end only)
    eval_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    #: a checkpoint every N steps; a redelivered job resumes from the last one
    save_steps: int = Field(default=50, ge=1, le=1_000_000)
    #: a `train` event every N steps
    logging_steps: int = Field(default=1, ge=1, le=100_000)
    #: loss on the assistant turns only (the prompt's tokens are context, not targets)
    assistant_only_loss: bool = True
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    #: "4bit": QLoRA (bitsandbytes, CUDA only); "none": the base in its own dtype
    quantize: Literal["none", "4bit"] = "none"
    #: recompute activations in the backward pass (about a third more compute, a fraction of the memory: what
    #: lets a 7-9B base train on 48 GB); None: on on a GPU, off on CPU
    gradient_checkpointing: bool | None = None
    #: also write the merged model (base + adapter in one, loadable by vLLM as a plain model)
    merge: bool = True
    def planned_steps(self, examples: int) -> int:
        """The optimizer steps this config runs over `examples` training examples."""
        if self.max_steps is not None:
            return self.max_steps
        per_epoch = max(1, -(-max(examples, 1) // self.batch_size) // self.grad_accum)
        return max(1, int(per_epoch * self.epochs + 0.999999))


def example_issues(item: Item | Rejection) -> str | None:
    """Why this staged row cannot be a training example (None: it can). A training example is a chat
    whose last turn is the assistant's, with text in every turn."""
    from shared.contracts.models import Rejection

    if isinstance(item, Rejection):
        return item.describe()
    if not item.messages:
        return "a training example needs 'messages' (llm-jobs data prepare turns prompt/completion into them)"
    if item.messages[-1].role != "assistant":
        return "the last turn must be the assistant's (the text to learn)"
    if not any(m.role == "user" for m in item.messages):
        return "a training example needs a user turn"
    return None


class TrainReport(BaseModel):
    """What a training job measured and wrote: the final summary's `training`, and the adapter's metrics."""

    adapter: str
    base_model: str
    steps: int
    epochs: float
    train_examples: int
    eval_examples: int
    #: tokens the model saw (attention-masked, prompt included), and per second of training
    train_tokens: int
    tokens_per_s: float
    runtime_s: float
    #: (step, loss) as logged, first to last
    losses: list[tuple[int, float]] = Field(default_factory=list)
    eval_loss: float | None = None
    #: perplexity of the held-out split's assistant tokens, before and after (None: no held-out split)
    base_perplexity: float | None = None
    adapter_perplexity: float | None = None
    #: the step training resumed from (None: it started afresh)
    resumed_from: int | None = None
    adapter_dir: str
    merged_dir: str | None = None
    model_card: str | None = None

    def metrics(self) -> dict[str, Any]:
        """The figures the store keeps with the adapter."""
        first, last = (self.losses[0][1], self.losses[-1][1]) if self.losses else (None, None)
        return {"steps": self.steps, "epochs": self.epochs, "train_examples": self.train_examples,
                "eval_examples": self.eval_examples, "train_tokens": self.train_tokens,
                "tokens_per_s": self.tokens_per_s, "runtime_s": self.runtime_s, "first_loss": first,
                "last_loss": last, "eval_loss": self.eval_loss, "base_perplexity": self.base_perplexity,
                "adapter_perplexity": self.adapter_perplexity}
