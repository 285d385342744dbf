"""A model's shape, for the fit check and the time model: `ModelSpec`.

Read from a local Hugging Face `config.json` (Llama, Gemma, Qwen and Mistral spell their keys alike), or taken
from a small built-in table of well-known models. Never from the network: a model that is neither a local
directory nor in the table is refused by name (`UnknownModel`), with the names the table knows.

The parameter count is computed from the shape when the config gives none, by one rule for a decoder of gated
MLPs (Llama-style): embeddings (twice when the output head is not tied to them), then per layer the attention
projections (q and o: hidden x heads x head_dim each; k and v: hidden x kv_heads x head_dim each), three MLP
matrices of hidden x intermediate (times the experts of a mixture-of-experts), and two norms. Biases and extra
norms (Qwen's q/k/v biases, Gemma-2's four norms) are left out: well under 0.1 % of the total.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class UnknownModel(ValueError):
    """A model name that is neither a local directory with a config.json nor in the built-in table."""


class ModelSpec(BaseModel):
    """What the planner needs to know of a model."""

    #: the name it goes by (a directory's name, or the table's)
    name: str
    #: parameters, all of them (what sits in memory)
    params: int = Field(gt=0)
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    #: attention heads, and key/value heads (fewer with grouped-query attention)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)
    #: the longest sequence it was made for (max_position_embeddings)
    max_context: int = Field(gt=0)
    #: the output head shares the embeddings' weights (counted once)
    tie_embeddings: bool = False
    #: the checkpoint's own quantization (config.json quantization_config.quant_method: awq, gptq, fp8), if any
    quantization: str | None = None
    #: the checkpoint's dtype (config.json torch_dtype), if stated
    dtype: str | None = None

    @property
    def params_b(self) -> float:
        """Parameters, in billions."""
        return self.params / 1e9

    @property
    def embedding_params(self) -> int:
        """The embeddings and the output head: never quantized by AWQ or GPTQ."""
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2)


def count_params(*, layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, vocab: int,
                 intermediate: int, tie_embeddings: bool, experts: int = 1) -> int:
    """The parameter count of a Llama-style decoder (the rule in the module docstring)."""
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * intermediate * experts
    per_layer = attention + mlp + 2 * hidden
    return vocab * hidden * (1 if tie_embeddings else 2) + layers * per_layer + hidden


def _spec(name: str, *, layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, vocab: int,
          intermediate: int, max_context: int, tie: bool = False) -> ModelSpec:
    params = count_params(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                          vocab=vocab, intermediate=intermediate, tie_embeddings=tie)
    return ModelSpec(name=name, params=params, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                     head_dim=head_dim, vocab=vocab, max_context=max_context, tie_embeddings=tie, dtype="bfloat16")


#: well-known models, from their published config.json files (the counts follow from `count_params`)
BUILTIN: dict[str, ModelSpec] = {s.name.lower(): s for s in (
    _spec("Llama-3.1-8B", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, vocab=128256,
          intermediate=14336, max_context=131072),
    _spec("Llama-3.1-70B", layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, vocab=128256,
          intermediate=28672, max_context=131072),
    _spec("Gemma-2-9B", layers=42, hidden=3584, heads=16, kv_heads=8, head_dim=256, vocab=256000,
          intermediate=14336, max_context=8192, tie=True),
    _spec("Gemma-2-27B", layers=46, hidden=4608, heads=32, kv_heads=16, head_dim=128, vocab=256000,
          intermediate=36864, max_context=8192, tie=True),
    _spec("Qwen2.5-7B", layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, vocab=152064,
          intermediate=18944, max_context=32768),
    _spec("Qwen2.5-72B", layers=80, hidden=8192, heads=64, kv_heads=8, head_dim=128, vocab=152064,
          intermediate=29568, max_context=32768),
    _spec("Mistral-7B", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, vocab=32768,
          intermediate=14336, max_context=32768),
    _spec("SmolLM2-135M", layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, vocab=49152,
          intermediate=1536, max_context=8192, tie=True),
)}

#: suffixes of a checkpoint's name that do not change its shape
_SUFFIXES = re.compile(r"(-(instruct|it|chat|hf|base|awq|gptq|int4|int8|fp8|bnb-4bit)|-v0\.\d+)+$")


def builtin_key(name: str) -> str:
    """`meta-llama/Meta-Llama-3.1-8B-Instruct-AWQ` -> `llama-3.1-8b`: the table's key for a hub id or a path."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    base = base.removeprefix("meta-")
    return _SUFFIXES.sub("", base)


def builtin(name: str) -> ModelSpec:
    """The built-in table's spec for `name` (any hub id or path of one of its models); UnknownModel if none."""
    spec = BUILTIN.get(builtin_key(name))
    if spec is None:
        raise UnknownModel(f"no shape known for model '{name}': give a local directory with its config.json, "
                           f"or one of {', '.join(s.name for s in BUILTIN.values())}")
    return spec


def from_config(config: dict[str, Any], name: str) -> ModelSpec:
    """A spec from a config.json's content (a multimodal model's `text_config` when the top has no layers)."""
    cfg = config
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "quantization_config": config.get("quantization_config")}

    def first(*keys: str, default: Any = None) -> Any:
        for k in keys:
            if cfg.get(k) is not None:
                return cfg[k]
        if default is None:
            raise ValueError(f"config.json of {name} has none of {', '.join(keys)}")
        return default

    layers = int(first("num_hidden_layers", "n_layer", "num_layers"))
    hidden = int(first("hidden_size", "n_embd", "d_model"))
    heads = int(first("num_attention_heads", "n_head"))
    kv_heads = int(first("num_key_value_heads", "num_kv_heads", default=heads))
    head_dim = int(first("head_dim", default=hidden // heads))
    vocab = int(first("vocab_size"))
    context = int(first("max_position_embeddings", "max_seq_len", "n_positions", "seq_length"))
    tie = bool(cfg.get("tie_word_embeddings", False))
    quant = cfg.get("quantization_config") or {}
    params = cfg.get("num_parameters")
    if params is None:
        params = count_params(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                              vocab=vocab, intermediate=int(first("intermediate_size", "ffn_dim",
                                                                  default=4 * hidden)),
                              tie_embeddings=tie, experts=int(first("num_local_experts", "num_experts", default=1)))
    return ModelSpec(name=name, params=int(params), layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                     head_dim=head_dim, vocab=vocab, max_context=context, tie_embeddings=tie,
                     quantization=(quant.get("quant_method") or None) if isinstance(quant, dict) else None,
                     dtype=cfg.get("torch_dtype") or cfg.get("dtype"))


def from_dir(directory: Path, name: str | None = None) -> ModelSpec:
    """A spec from a model directory's config.json."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UnknownModel(f"cannot read {path}: {e}") from e
    try:
        return from_config(config, name or Path(directory).name)
    except (ValueError, TypeError) as e:
        raise UnknownModel(str(e)) from e


def resolve(model: str, directory: Path | None = None) -> ModelSpec:
    """`model`'s spec: from `directory` (or `model` itself) when it holds a config.json, else the built-in table.

    `directory` is where the caller found the model's files (the embedded model's converted directory, a hub
    cache snapshot); `model` is the name to show.
    """
    for d in (directory, Path(model).expanduser()):
        if d is not None and (d / "config.json").is_file():
            return from_dir(d, builtin_name(model) or Path(model).name)
    return builtin(model)


def builtin_name(model: str) -> str | None:
    """The table's name for `model` when it is one of its models (a tidier name to show), else None."""
    spec = BUILTIN.get(builtin_key(model))
    return spec.name if spec else None
