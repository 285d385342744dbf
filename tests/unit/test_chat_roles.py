"""A chat template that refuses the system role (Gemma-2's) must not fail every item.

The engine finds out from the template's behaviour, once per template, and then folds the system
text into the first user turn. These tests run `VLLMEngine.complete` on the real SmolLM2 HF
tokenizer with a stand-in for vLLM's AsyncLLM that records the prompt it is handed: no engine boots.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.contracts.errors import ErrorCode, ItemFailure
from shared.contracts.models import Item, Job, Sampling
from shared.contracts.prepare import Limits, RequestBuilder
from shared.contracts.settings import Settings

#: the real chat templates (tests/fixtures/chat_templates/SOURCES.md says where each comes from)
TEMPLATES = Path(__file__).parents[1] / "fixtures" / "chat_templates"
#: Gemma-2's chat template, verbatim (google/gemma-2-2b-it's tokenizer_config.json)
GEMMA2 = (TEMPLATES / "google-gemma-2-2b-it.jinja").read_text(encoding="utf-8")

#: renders every turn but silently leaves system messages out
DROPS_SYSTEM = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: accepts a system message first (so the probe passes) but nowhere else
SYSTEM_ONLY_FIRST = (
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('a system message may only come first') }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SYSTEM = "You grade answers. Reply in JSON."


class FakeLLM:
    """What VLLMEngine reads of vLLM's AsyncLLM; `generate` records the prompt token ids."""

    errored = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prompts: list[list[int]] = []
        self.vllm_config = SimpleNamespace(model_config=SimpleNamespace(max_model_len=2048),
                                           scheduler_config=SimpleNamespace(max_num_seqs=4))

    def get_tokenizer(self):
        return self.tokenizer

    async def generate(self, prompt, params, request_id):
        self.prompts.append(list(prompt["prompt_token_ids"]))
        yield SimpleNamespace(prompt_token_ids=prompt["prompt_token_ids"],
                              outputs=[SimpleNamespace(text="ok", finish_reason="stop", token_ids=[1])])


def make_engine(tokenizer, template: str | None = None):
    from handler.engine.vllm_engine import VLLMEngine

    if template is not None:
        tokenizer.chat_template = template
    llm = FakeLLM(tokenizer)
    return VLLMEngine(llm, Settings(_env_file=None), "SmolLM2-135M-Instruct", "/models/smol"), llm


def requests(job: Job):
    builder = RequestBuilder(job, Limits())
    return [builder.build(item) for item in job.items]


def prompts_job(n: int, system: str | None = SYSTEM) -> Job:
    return Job(items=[Item(custom_id=f"i{i}", prompt=f"Question {i}?") for i in range(n)], system=system,
               sampling=Sampling(max_tokens=8))


def rendered(llm: FakeLLM, tokenizer, n: int = -1) -> str:
    return tokenizer.decode(llm.prompts[n])


def test_gemma2_template_really_refuses_the_system_role(tokenizer):
    from jinja2.exceptions import TemplateError

    tokenizer.chat_template = GEMMA2
    with pytest.raises(TemplateError, match="System role not supported"):
        tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}],
                                      tokenize=False)


async def test_every_item_succeeds_with_the_system_text_in_the_first_user_turn(tokenizer):
    engine, llm = make_engine(tokenizer, GEMMA2)
    done = [await engine.complete(r) for r in requests(prompts_job(6))]
    assert len(done) == 6 and all(c.text == "ok" for c in done)
    for i in range(6):
        text = rendered(llm, tokenizer, i)
        assert f"<start_of_turn>user\n{SYSTEM}\n\nQuestion {i}?<end_of_turn>\n<start_of_turn>model\n" in text
        assert "<start_of_turn>system" not in text and text.count("<start_of_turn>user") == 1


async def test_the_template_is_probed_once_then_each_item_renders_once(tokenizer):
    engine, _ = make_engine(tokenizer, GEMMA2)
    calls = []
    real = tokenizer.apply_chat_template

    def spy(messages, *a, **kw):
        calls.append([m["role"] for m in messages])
        return real(messages, *a, **kw)

    tokenizer.apply_chat_template = spy
    reqs = requests(prompts_job(4))
    await engine.complete(reqs[0])
    calls.clear()
    for r in reqs[1:]:
        await engine.complete(r)
    assert calls == [["user"]] * 3  # no refused attempt per item: the folding is decided once


async def test_a_multi_turn_conversation_keeps_its_turns(tokenizer):
    engine, llm = make_engine(tokenizer, GEMMA2)
    job = Job(items=[Item(custom_id="m", messages=[
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "First?"},
        {"role": "assistant", "content": "One."}, {"role": "user", "content": "Second?"}])])
    await engine.complete(requests(job)[0])
    text = rendered(llm, tokenizer)
    assert (f"<start_of_turn>user\n{SYSTEM}\n\nFirst?<end_of_turn>\n<start_of_turn>model\nOne.<end_of_turn>\n"
            "<start_of_turn>user\nSecond?<end_of_turn>\n<start_of_turn>model\n") in text


async def test_a_system_message_alone_becomes_the_user_turn(tokenizer):
    engine, llm = make_engine(tokenizer, GEMMA2)
    job = Job(items=[Item(custom_id="s", messages=[{"role": "system", "content": SYSTEM}])])
    await engine.complete(requests(job)[0])
    assert f"<start_of_turn>user\n{SYSTEM}<end_of_turn>\n<start_of_turn>model\n" in rendered(llm, tokenizer)


async def test_a_template_that_takes_the_system_role_is_left_alone(tokenizer):
    engine, llm = make_engine(tokenizer)  # SmolLM2's own ChatML template
    await engine.complete(requests(prompts_job(1))[0])
    text = rendered(llm, tokenizer)
    assert f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nQuestion 0?<|im_end|>" in text


async def test_a_template_that_drops_the_system_role_gets_it_folded(tokenizer):
    engine, llm = make_engine(tokenizer, DROPS_SYSTEM)
    await engine.complete(requests(prompts_job(1))[0])
    assert f"<|im_start|>user\n{SYSTEM}\n\nQuestion 0?<|im_end|>" in rendered(llm, tokenizer)


async def test_an_item_the_template_refuses_is_folded_and_retried(tokenizer):
    engine, llm = make_engine(tokenizer, SYSTEM_ONLY_FIRST)
    job = Job(items=[Item(custom_id="late", messages=[
        {"role": "user", "content": "First?"}, {"role": "assistant", "content": "One."},
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "Second?"}])])
    await engine.complete(requests(job)[0])
    text = rendered(llm, tokenizer)
    assert f"<|im_start|>user\n{SYSTEM}\n\nSecond?<|im_end|>" in text and "<|im_start|>system" not in text
    # the template does take a leading system message, so that one stays as it is
    await engine.complete(requests(prompts_job(1))[0])
    assert f"<|im_start|>system\n{SYSTEM}<|im_end|>" in rendered(llm, tokenizer)


async def test_messages_the_template_refuses_anyway_fail_that_item_alone(tokenizer):
    engine, llm = make_engine(tokenizer, GEMMA2)
    job = Job(items=[Item(custom_id="twice", messages=[
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}])])
    with pytest.raises(ItemFailure) as e:
        await engine.complete(requests(job)[0])
    assert e.value.code == ErrorCode.invalid_item and "alternate" in e.value.message
    assert llm.prompts == []


async def test_no_system_text_renders_as_before(tokenizer):
    engine, llm = make_engine(tokenizer, GEMMA2)
    await engine.complete(requests(prompts_job(1, system=None))[0])
    assert "<start_of_turn>user\nQuestion 0?<end_of_turn>\n<start_of_turn>model\n" in rendered(llm, tokenizer)
