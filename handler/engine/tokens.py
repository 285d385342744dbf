"""A job's tokens, counted before it runs, exactly as the engine will count them: the planner's input
(`llm-jobs plan`, shared/planning/plan.py `TokenCounts`).

Every item's request is built by the job's own builder (shared/contracts/prepare.py, as the runner does), and its
prompt goes through `ChatPrompts.prompt_ids`, the engine's own path from a request to token ids (chat template,
system role folding, prompts encoded as they are). An item that cannot be built, or that its template refuses,
is counted as rejected; it never stops the count.

Also here: which tokenizer a command loads when none is named (the engine's model: baked into the image,
MODEL_NAME, or the embedded SmolLM2), shared by `llm-jobs data prepare` and `llm-jobs plan`; where that model's
files are, when they are on this machine; and `sample_output`, which runs a few items to measure how much a
job's items really write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handler.engine.chat import ChatPrompts
from shared.contracts.models import Item, Job
from shared.contracts.prepare import Limits, builder_for
from shared.contracts.settings import DEFAULT_MODEL_NAME, Settings
from shared.planning.plan import TokenCounts
from shared.planning.specs import ModelSpec, resolve

if TYPE_CHECKING:
    from handler.engine.base import Engine

log = logging.getLogger(__name__)


def count_tokens(job: Job, tokenizer: Any, *, limits: Limits = Limits(), served_models: frozenset[str] = frozenset(),
                 any_model: bool = False, name: str | None = None) -> TokenCounts:
    """Every item's prompt tokens and max_tokens (see the module docstring). `limits`, `served_models` and
    `any_model` are the checks the job was validated with; `name` says whose tokenizer this is.

    Raises InputError for a job-level problem (a template that does not compile), as the runner would."""
    counter = TokenCounter(job, tokenizer, limits=limits, served_models=served_models, any_model=any_model)
    counter.add(job.items, rejected=len(job.rejected))
    return counter.counts(name)


class TokenCounter:
    """Counts a job's items a page at a time (a job of an uploaded file is read from the store in pages): the
    job's options build the requests, `add` takes each page. Holds one int per item, never the items."""

    def __init__(self, job: Job, tokenizer: Any, *, limits: Limits = Limits(),
                 served_models: frozenset[str] = frozenset(), any_model: bool = False):
        # raises InputError for a job-level problem, before any item is looked at
        self._builder, self._built = builder_for(job, limits, served_models, any_model=any_model)
        self._chat = ChatPrompts(tokenizer)
        self._approximate = isinstance(tokenizer, ApproxTokenizer)
        self._lengths: list[int] = []
        self._max_tokens: list[int] = []
        self._rejected = 0

    def add(self, items: Iterable[Item], *, rejected: int = 0) -> None:
        """Count `items`; `rejected` more were refused at the edge (they never run)."""
        self._rejected += rejected
        for item in items:
            try:
                request = self._built.pop(item.custom_id, None) or self._builder.build(item)
                ids = self._chat.prompt_ids(request)
            except Exception as e:  # as the runner does: whatever building raises is that item's error
                log.debug("item %s is not counted (%s)", item.custom_id, type(e).__name__)
                self._rejected += 1
                continue
            self._lengths.append(len(ids))
            self._max_tokens.append(request.sampling.max_tokens)

    def counts(self, name: str | None = None) -> TokenCounts:
        counts = TokenCounts.of(self._lengths, self._max_tokens, rejected=self._rejected, tokenizer=name)
        return counts.model_copy(update={"exact": False}) if self._approximate else counts


async def sample_output(job: Job, engine: Engine, k: int, counts: TokenCounts, *, limits: Limits = Limits(),
                        any_model: bool = False) -> TokenCounts:
    """`counts` with the mean completion tokens of the job's first `k` items, run through the runner on `engine`
    (no store). Items that end in an error without usage (nothing was generated) are not in the mean."""
    from handler.runner import run_job
    from shared.contracts.events import ChunkEvent

    sample = job.model_copy(update={"items": job.items[:k], "rejected": []})
    written: list[int] = []
    async for event in run_job(sample, engine, limits=limits, any_model=any_model):
        if isinstance(event, ChunkEvent):
            written += [r.usage.completion_tokens for r in event.results if r.usage is not None]
    return counts.model_copy(update={"sampled": len(written),
                                     "output_tokens_mean": sum(written) / len(written) if written else None})


# ## Which tokenizer


def tokenizer_source(settings: Settings, model: str | None) -> tuple[str, bool, str | None]:
    """(what to load, local files only, revision): `model`, else the engine's model (baked, MODEL_NAME or the
    embedded one, as handler/engine/vllm_engine.py `resolve_model` picks it). A hub id is looked up on the hub
    unless HF_HUB_OFFLINE; a local directory never is."""
    from handler.engine.bake import baked_model
    from handler.engine.default_model import ensure_default_model

    if model:
        return model, settings.hf_hub_offline or Path(model).expanduser().is_dir(), None
    if baked := baked_model(settings.baked_model_dir, settings.model_name):
        return str(baked), True, None
    if settings.model_name and settings.model_name != DEFAULT_MODEL_NAME:
        return settings.model_name, settings.hf_hub_offline, settings.model_revision
    return str(ensure_default_model(settings.cache_dir)), True, None


def hub_cache(settings: Settings) -> str | None:
    """The Hugging Face hub cache Settings point at (HF_HOME/hub), or None for the library's default."""
    return str(settings.hf_home / "hub") if settings.hf_home else None


@lru_cache(maxsize=2)
def load_tokenizer(name: str, local: bool, revision: str | None, trust: bool, cache_dir: str | None) -> Any:
    from transformers import AutoTokenizer  # heavy: only the commands that count tokens load it

    return AutoTokenizer.from_pretrained(name, local_files_only=local, revision=revision, trust_remote_code=trust,
                                         cache_dir=cache_dir)


def model_files(name: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """The directory holding `name`'s config.json on this machine: `name` itself, or its snapshot in the hub
    cache; None when neither (never downloads)."""
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision)
    except ValueError:  # not a hub id
        return None
    return Path(found).parent if isinstance(found, str) else None


# ## Where the tokenizer is not here


class ApproxTokenizer:
    """Stands in where the model's tokenizer cannot be loaded (a hub model this machine has no files of, an API
    with no transformers): about CHARS_PER_TOKEN characters a token, as BPE vocabularies give on English prose,
    plus CHAT_TOKENS of chat markup per message. An estimate, and the plan says so (`PlanModel.exact`)."""

    CHARS_PER_TOKEN = 4
    CHAT_TOKENS = 4
    #: not None, so chat messages are counted (handler/engine/chat.py takes a tokenizer without one for a
    #: model that serves only prompts)
    chat_template = "approximate"

    def encode(self, text: str, **_: Any) -> list[int]:
        return [0] * -(-len(text) // self.CHARS_PER_TOKEN)

    def apply_chat_template(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                            tokenize: bool = True, **_: Any) -> Any:
        if not tokenize:
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        n = sum(len(self.encode(str(m["content"]))) + self.CHAT_TOKENS for m in messages)
        return [0] * (n + (self.CHAT_TOKENS if add_generation_prompt else 0))


@dataclass(frozen=True, slots=True)
class PlanModel:
    """The model a plan is for: its name as shown, its tokenizer, whether that is the real one, and its shape."""

    name: str
    tokenizer: Any
    #: False: ApproxTokenizer (the reason is in `why_approximate`)
    exact: bool
    spec: ModelSpec
    why_approximate: str | None = None


def plan_model(settings: Settings) -> PlanModel:
    """The model the engine would serve with these settings, for `llm-jobs plan` and `POST /v1/plan`: its
    tokenizer when it loads (never downloaded when HF_HUB_OFFLINE or a local directory), else ApproxTokenizer.

    Blocking (reads files, may load transformers): call it in a thread. Raises UnknownModel when neither the
    model's config.json nor the built-in table (shared/planning/specs.py) knows its shape."""
    shown = settings.model_name or DEFAULT_MODEL_NAME
    name, local, revision = tokenizer_source(settings, None)
    spec = resolve(shown, model_files(name, revision, hub_cache(settings)))
    try:
        tokenizer = load_tokenizer(name, local, revision, settings.trust_remote_code, hub_cache(settings))
    except (ImportError, OSError, ValueError) as e:  # no files here, no transformers, a hub we cannot reach
        why = f"the tokenizer of {shown} is not available here ({type(e).__name__})"
        log.info("plan: %s; prompt tokens are estimated", why)
        return PlanModel(shown, ApproxTokenizer(), False, spec, why)
    return PlanModel(shown, tokenizer, True, spec)
