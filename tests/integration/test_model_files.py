"""What a model's own files say, on the real vLLM CPU engine: no chat template, generation-config defaults.

The model is SmolLM2 as a base model brings it: no chat template (none in tokenizer_config.json, no
chat_template.jinja), and a generation_config.json that samples greedily (`temperature: 0`) and
ends a turn at a newline too (`eos_token_id: [<|im_end|>, "\\n"]`). One engine serves this module.
"""

from __future__ import annotations

import json

import pytest_asyncio

from handler.engine.chat import NO_TEMPLATE
from handler.runner import run_job
from shared.contracts.errors import ErrorCode
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.models import Item, Job, ResultStatus, Sampling
from tests.integration.conftest import engine_settings, model_copy

#: raw text for a base model: it goes on with the sentence
OPENING = "Once upon a time, in a small village by the sea,"
NEWLINE = "\n"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def base_engine(tmp_path_factory):
    """Its own engine, for this module only, serving SmolLM2 without a chat template."""
    from transformers import AutoTokenizer

    from handler.engine.vllm_engine import VLLMEngine

    model = model_copy(tmp_path_factory.mktemp("base-model") / "smol-base")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    [newline] = AutoTokenizer.from_pretrained(model, local_files_only=True).encode(NEWLINE, add_special_tokens=False)
    generation = json.loads((model / "generation_config.json").read_text())
    generation.update(temperature=0.0, eos_token_id=[generation["eos_token_id"], newline])
    (model / "generation_config.json").write_text(json.dumps(generation, indent=2))
    eng = await VLLMEngine.start(engine_settings(model_name=str(model), hf_hub_offline=True))
    yield eng
    await eng.close()


async def run(engine, job: Job) -> dict:
    events = [e async for e in run_job(job, engine)]
    assert isinstance(events[-1], FinalEvent)
    return {r.custom_id: r for e in events if isinstance(e, ChunkEvent) for r in e.results}


async def test_a_chat_item_fails_alone_and_prompts_complete(base_engine):
    assert base_engine._tokenizer.chat_template is None
    job = Job(sampling=Sampling(max_tokens=12), items=[
        Item(custom_id="prompt", prompt=OPENING),
        Item(custom_id="messages", messages=[{"role": "user", "content": "Hello!"}]),
        Item(custom_id="completion", url="/v1/completions", body={"prompt": OPENING, "max_tokens": 12}),
    ])
    got = await run(base_engine, job)
    assert got["messages"].status == ResultStatus.error
    assert (got["messages"].error.code, got["messages"].error.message) == (ErrorCode.invalid_item, NO_TEMPLATE)
    for cid in ("prompt", "completion"):
        assert got[cid].status == ResultStatus.ok and got[cid].text, got[cid]
    # the prompt went as it is: the same tokens as the /v1/completions line
    assert got["prompt"].usage.prompt_tokens == got["completion"].usage.prompt_tokens
    assert got["prompt"].text == got["completion"].text  # greedy: the model's default


async def test_the_generation_configs_temperature_applies_unless_the_job_sets_one(base_engine):
    seeds = range(1, 7)
    unset = Job(sampling=Sampling(max_tokens=24),
                items=[Item(custom_id=f"s{n}", prompt=OPENING, sampling=Sampling(seed=n)) for n in seeds])
    greedy = Job(sampling=Sampling(max_tokens=24, temperature=0),
                 items=[Item(custom_id="g", prompt=OPENING)])
    hot = Job(sampling=Sampling(max_tokens=24, temperature=1.0),
              items=[Item(custom_id=f"s{n}", prompt=OPENING, sampling=Sampling(seed=n)) for n in seeds])
    by_default = {r.text for r in (await run(base_engine, unset)).values()}
    [expected] = [r.text for r in (await run(base_engine, greedy)).values()]
    sampled = {r.text for r in (await run(base_engine, hot)).values()}
    assert by_default == {expected}  # every seed gave the greedy text: temperature 0 came from the model
    assert sampled - {expected}, sampled  # the job's temperature 1.0 won: the seeds sample


async def test_an_extra_eos_of_the_generation_config_ends_the_output(base_engine):
    job = Job(sampling=Sampling(max_tokens=200, temperature=1.0),
              items=[Item(custom_id=f"n{n}", prompt=OPENING, sampling=Sampling(seed=n))
                     for n in range(4)])
    got = await run(base_engine, job)
    for r in got.values():
        assert r.status == ResultStatus.ok and NEWLINE not in r.text, r
    # vLLM stops at the newline by itself: at least one sample got there well before 200 tokens
    assert any(r.finish_reason == "stop" and r.usage.completion_tokens < 200 for r in got.values()), got
