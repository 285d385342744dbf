"""`count_tokens` (handler/engine/tokens.py) counts what the tokenizer itself counts: the embedded model's real
tokenizer, its chat template applied directly here, for prompts, chats, a system text, a template and an OpenAI
completions line."""

from __future__ import annotations

import pytest

from handler.engine.tokens import count_tokens
from shared.contracts.models import Item, Job, Message, Rejection, Sampling
from shared.contracts.prepare import Limits


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def chat(tokenizer, messages: list[dict[str, str]]) -> int:
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


PROMPTS = ["Write one sentence about autumn.", "What is the boiling point of water in Celsius?",
           "Ünïcödé, emoji 🍂 and a long " + "word " * 200]


def test_prompts(tokenizer):
    job = Job(items=[Item(custom_id=f"p{i}", prompt=p) for i, p in enumerate(PROMPTS)])
    counts = count_tokens(job, tokenizer, name="smol")
    expected = [chat(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    assert counts.items == 3 and counts.rejected == 0 and counts.tokenizer == "smol"
    assert counts.prompt_tokens == sum(expected)
    assert counts.prompt_tokens_max == max(expected)
    assert counts.prompt_tokens_mean == pytest.approx(sum(expected) / 3)
    # the default max_tokens bounds the output
    assert (counts.max_tokens, counts.completion_tokens_bound) == (Limits().default_max_tokens,
                                                                   3 * Limits().default_max_tokens)


def test_chats_with_earlier_turns(tokenizer):
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello! How can I help?"},
             {"role": "user", "content": "Name three rivers."}]
    job = Job(items=[Item(custom_id="c", messages=[Message(**m) for m in turns])])
    assert count_tokens(job, tokenizer).prompt_tokens == chat(tokenizer, turns)


def test_a_system_text(tokenizer):
    job = Job(system="Answer in French.", items=[Item(custom_id="s", prompt="Good morning.")])
    expected = chat(tokenizer, [{"role": "system", "content": "Answer in French."},
                                {"role": "user", "content": "Good morning."}])
    assert count_tokens(job, tokenizer).prompt_tokens == expected
    # the system text is really counted (the template's own default system text gives way to it)
    longer = job.model_copy(update={"system": "Answer in French, and in one short sentence."})
    assert count_tokens(longer, tokenizer).prompt_tokens > expected


def test_a_template_over_fields_and_per_item_max_tokens(tokenizer):
    job = Job(template="Grade this essay from 0 to 10:\n{{ essay }}", sampling=Sampling(max_tokens=20),
              items=[Item(custom_id="e1", fields={"essay": "Cats are good."}),
                     Item(custom_id="e2", fields={"essay": "Dogs too."}, sampling=Sampling(max_tokens=5))])
    counts = count_tokens(job, tokenizer)
    assert counts.prompt_tokens == sum(chat(tokenizer, [{"role": "user", "content": f"Grade this essay from 0 to "
                                                                                    f"10:\n{e}"}])
                                       for e in ("Cats are good.", "Dogs too."))
    assert (counts.max_tokens, counts.completion_tokens_bound) == (20, 25)


def test_an_openai_completions_line_is_encoded_as_it_is(tokenizer):
    prompt = "Once upon a time"
    job = Job(items=[Item(custom_id="o", url="/v1/completions", method="POST",
                          body={"model": "any", "prompt": prompt, "max_tokens": 7})])
    counts = count_tokens(job, tokenizer, any_model=True)
    assert counts.prompt_tokens == len(tokenizer.encode(prompt))
    assert counts.completion_tokens_bound == 7


def test_items_that_cannot_be_built_are_counted_as_rejected(tokenizer):
    job = Job(items=[Item(custom_id="ok", prompt="Hello."),
                     Item(custom_id="no-template", fields={"a": 1}),
                     Item(custom_id="too-long", prompt="x" * (Limits().max_prompt_chars + 1))],
              rejected=[Rejection(custom_id="bad", index=3, message="refused at load")])
    counts = count_tokens(job, tokenizer)
    assert (counts.items, counts.rejected) == (1, 3)
    assert counts.prompt_tokens == chat(tokenizer, [{"role": "user", "content": "Hello."}])


def test_an_empty_job(tokenizer):
    counts = count_tokens(Job(items=[]), tokenizer)
    assert (counts.items, counts.prompt_tokens, counts.prompt_tokens_mean, counts.completion_tokens_bound) == (
        0, 0, 0.0, 0)
