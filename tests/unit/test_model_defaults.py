"""A model without a chat template, and a model's generation-config defaults, on VLLMEngine.

The real SmolLM2 HF tokenizer, with a stand-in for vLLM's AsyncLLM that records what it is handed
(its ModelConfig answers `get_diff_sampling_param` as vLLM's does): no engine boots.
"""

from __future__ import annotations

import logging

import pytest

from handler.engine.chat import NO_TEMPLATE
from handler.engine.generation import model_defaults
from handler.runner import run_job
from shared.contracts.errors import ErrorCode
from shared.contracts.events import ChunkEvent
from shared.contracts.models import Item, Job, ResultStatus, Sampling
from shared.contracts.prepare import SAMPLING_DEFAULTS
from shared.contracts.settings import Settings
from tests.unit.test_chat_roles import FakeLLM

pytest.importorskip("vllm")

#: Qwen2.5-7B-Instruct's sampling defaults (its generation_config.json), plus a max_new_tokens
QWEN_DEFAULTS = {"repetition_penalty": 1.05, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "max_tokens": 300}


class RecordingLLM(FakeLLM):
    """Records the SamplingParams of every request; its model has these generation-config defaults."""

    def __init__(self, tokenizer, defaults: dict | None = None):
        super().__init__(tokenizer)
        self.params: list = []
        self.vllm_config.model_config.get_diff_sampling_param = lambda: dict(defaults or {})

    async def generate(self, prompt, params, request_id):
        self.params.append(params)
        async for out in super().generate(prompt, params, request_id):
            yield out


def engine_for(tokenizer, defaults: dict | None = None, template: str | None = "keep"):
    from handler.engine.vllm_engine import VLLMEngine

    if template != "keep":
        tokenizer.chat_template = template
    llm = RecordingLLM(tokenizer, defaults)
    return VLLMEngine(llm, Settings(_env_file=None), "SmolLM2-135M-Instruct", "/models/smol"), llm


async def results(job: Job, engine) -> dict:
    """Each item's result, by custom_id."""
    return {r.custom_id: r async for e in run_job(job, engine) if isinstance(e, ChunkEvent) for r in e.results}


# ## A model without a chat template

def mixed_job(system: str | None = None) -> Job:
    return Job(system=system, sampling=Sampling(max_tokens=8), items=[
        Item(custom_id="prompt", prompt="The capital of France is"),
        Item(custom_id="messages", messages=[{"role": "user", "content": "Hi"}]),
        Item(custom_id="completion", url="/v1/completions", body={"prompt": "Once upon a time"}),
        Item(custom_id="chat", url="/v1/chat/completions", body={"messages": [{"role": "user", "content": "Hi"}]}),
    ])


async def test_without_a_chat_template_prompts_run_and_chat_items_fail_alone(tokenizer):
    engine, llm = engine_for(tokenizer, template=None)
    got = await results(mixed_job(), engine)
    for cid in ("messages", "chat"):
        assert got[cid].status == ResultStatus.error
        assert (got[cid].error.code, got[cid].error.message) == (ErrorCode.invalid_item, NO_TEMPLATE)
    assert got["prompt"].status == got["completion"].status == ResultStatus.ok
    # the prompts went as they are, as /v1/completions sends them
    assert sorted(llm.prompts) == sorted([tokenizer.encode("The capital of France is"),
                                          tokenizer.encode("Once upon a time")])


async def test_without_a_chat_template_the_jobs_system_text_opens_the_prompt(tokenizer):
    engine, llm = engine_for(tokenizer, template=None)
    job = Job(system="Answer in one word.", items=[Item(custom_id="p", prompt="The capital of France is")])
    assert (await results(job, engine))["p"].status == ResultStatus.ok
    assert llm.prompts == [tokenizer.encode("Answer in one word.\n\nThe capital of France is")]


async def test_fields_through_the_template_are_a_prompt_too(tokenizer):
    engine, llm = engine_for(tokenizer, template=None)
    job = Job(template="Translate: {{ text }}", items=[Item(custom_id="f", fields={"text": "bon dia"})])
    assert (await results(job, engine))["f"].status == ResultStatus.ok
    assert llm.prompts == [tokenizer.encode("Translate: bon dia")]


async def test_the_missing_template_is_logged_once_at_start(tokenizer, caplog):
    with caplog.at_level(logging.INFO, logger="handler.engine.chat"):
        engine, _ = engine_for(tokenizer, template=None)
        await results(mixed_job(), engine)
    assert sum("no chat template" in r.getMessage() for r in caplog.records) == 1


# ## The model's generation-config defaults

async def test_the_models_defaults_fill_what_the_job_leaves_unset(tokenizer):
    engine, llm = engine_for(tokenizer, QWEN_DEFAULTS)
    await results(Job(items=[Item(custom_id="a", prompt="x")]), engine)
    p = llm.params[0]
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.7, 0.8, 20, 1.05)
    assert p.max_tokens == Settings(_env_file=None).default_max_tokens  # max_new_tokens is not taken


async def test_the_jobs_and_the_items_values_win(tokenizer):
    engine, llm = engine_for(tokenizer, QWEN_DEFAULTS)
    job = Job(sampling=Sampling(temperature=0.3), items=[
        Item(custom_id="a", prompt="x"), Item(custom_id="b", prompt="y", sampling=Sampling(top_p=0.5))])
    await results(job, engine)
    assert sorted((p.temperature, p.top_p) for p in llm.params) == [(0.3, 0.5), (0.3, 0.8)]
    assert all(p.top_k == 20 and p.repetition_penalty == 1.05 for p in llm.params)


async def test_a_model_without_defaults_samples_with_llm_jobs_own(tokenizer):
    engine, llm = engine_for(tokenizer, {})
    await results(Job(items=[Item(custom_id="a", prompt="x")]), engine)
    p = llm.params[0]
    assert (p.temperature, p.top_p, p.presence_penalty, p.frequency_penalty) == (1.0, 1.0, 0.0, 0.0)
    assert (p.top_k, p.repetition_penalty) == (0, 1.0)  # vLLM's own: no top-k, no penalty


def test_the_defaults_taken_are_logged_once(tokenizer, caplog):
    with caplog.at_level(logging.INFO, logger="handler.engine.generation"):
        engine_for(tokenizer, QWEN_DEFAULTS)
    [record] = [r for r in caplog.records if "generation config" in r.getMessage()]
    assert "temperature=0.7" in record.getMessage() and "top_k=20" in record.getMessage()
    assert "max_tokens" not in record.getMessage()


def test_values_out_of_range_are_left_out(caplog):
    with caplog.at_level(logging.WARNING, logger="handler.engine.generation"):
        d = model_defaults({"temperature": 5.0, "top_p": 0.9, "top_k": "many", "min_p": 0.05})
    assert d.sampling == SAMPLING_DEFAULTS.model_copy(update={"top_p": 0.9})
    assert d.extra == {"min_p": 0.05}
    assert sum("left out" in r.getMessage() for r in caplog.records) == 2


def test_resolve_keeps_a_requests_own_values():
    d = model_defaults({"temperature": 0.6, "top_p": 0.9})
    s = d.resolve(Sampling(temperature=0.0, max_tokens=10))
    assert (s.temperature, s.top_p, s.max_tokens, s.presence_penalty) == (0.0, 0.9, 10, 0.0)

