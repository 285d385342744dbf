"""The model's own sampling defaults, from its generation_config.json.

vLLM's AsyncLLM keeps a generation config's stop tokens by itself: every id in its `eos_token_id`
joins each request's stop tokens. Its sampling defaults (temperature, top_p, top_k, min_p,
repetition_penalty, the penalties) only vLLM's OpenAI server applies, not `AsyncLLM.generate`. So the
engine takes them here, once: a field the item and the job leave unset takes the model's value, then
llm-jobs' own default (`SAMPLING_DEFAULTS`). `top_k`, `min_p` and `repetition_penalty` are not job
options: the model's values apply to every request. `max_new_tokens` is not taken: DEFAULT_MAX_TOKENS
(a setting, under its cap) decides. Like vLLM, `do_sample` is not read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.contracts.models import Sampling
from shared.contracts.prepare import SAMPLING_DEFAULTS

log = logging.getLogger(__name__)

#: generation-config fields that are Sampling options too: a job's or an item's value wins
_OPTIONS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
#: generation-config fields with no Sampling option: passed to vLLM as they are
_EXTRAS = ("top_k", "min_p", "repetition_penalty")


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """What a request takes where the item and the job say nothing."""

    #: the model's values over llm-jobs' own defaults
    sampling: Sampling
    #: SamplingParams keywords with no Sampling option (top_k, min_p, repetition_penalty)
    extra: dict[str, float]
    #: every value taken from the model, for the log
    taken: dict[str, float]

    def resolve(self, sampling: Sampling) -> Sampling:
        """A request's options with unset fields taken from the model, then from llm-jobs' defaults."""
        return sampling.over(self.sampling)


def model_defaults(diff: Mapping[str, Any]) -> ModelDefaults:
    """ModelDefaults from vLLM's `ModelConfig.get_diff_sampling_param()`; a value out of range is left out."""
    options: dict[str, float] = {}
    extra: dict[str, float] = {}
    for key in (*_OPTIONS, *_EXTRAS):
        value = diff.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            log.warning("the model's generation config has %s=%r: not a number, left out", key, value)
            continue
        if key in _OPTIONS:
            try:
                Sampling.model_validate({key: value})
            except ValidationError:
                log.warning("the model's generation config has %s=%r: out of range, left out", key, value)
                continue
            options[key] = value
        else:
            extra[key] = value
    return ModelDefaults(SAMPLING_DEFAULTS.model_copy(update=options), extra, {**options, **extra})


def read_model_defaults(model_config: Any) -> ModelDefaults:
    """The defaults of the model vLLM loaded (its generation_config.json, as vLLM reads it); logged once."""
    getter = getattr(model_config, "get_diff_sampling_param", None)
    defaults = model_defaults(getter() if callable(getter) else {})
    if defaults.taken:
        log.info("sampling defaults from the model's generation config: %s (a job's or an item's own values win)",
                 ", ".join(f"{k}={v:g}" for k, v in defaults.taken.items()))
    return defaults
