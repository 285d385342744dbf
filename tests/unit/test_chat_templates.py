"""The real chat templates of the families users deploy, rendered the way the engine renders them.

Each template (tests/fixtures/chat_templates, sources in SOURCES.md) is set on the embedded SmolLM2
HF tokenizer, as a fine-tune of that family brings it in its files. `ChatPrompts` (what VLLMEngine
renders with) must give the very token ids transformers' own `apply_chat_template` gives for the
same messages, or, where the template takes no system message, for the messages with the system
text folded into the first user turn. The system text must be in every family's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from handler.engine.chat import ChatPrompts, fold_system
from shared.contracts.models import Item, Job
from shared.contracts.prepare import Limits, RequestBuilder
from tests.unit.test_chat_roles import GEMMA2, TEMPLATES

SYSTEM = "Ets un assistent que respon en català, amb frases curtes i correctes."
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Quina és la capital de Catalunya? Fes servir «cometes» i la ela geminada: l·l."},
    {"role": "assistant", "content": "La capital és «Barcelona», ciutat de l'àrea metropolitana."},
    {"role": "user", "content": "I la de França? Respon amb accents: àèéíòóúïüç."},
]


@dataclass(frozen=True)
class Family:
    file: str
    #: does the template render a system message (if not, the engine folds it into the first user turn)
    takes_system: bool
    #: what the template puts last, for the assistant's turn
    generation_prompt: str


FAMILIES = {
    "gemma-2": Family("google-gemma-2-2b-it.jinja", False, "<start_of_turn>model\n"),
    "llama-3.1": Family("meta-llama-Llama-3.1-8B-Instruct.jinja", True,
                        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "mistral-nemo": Family("mistralai-Mistral-Nemo-Instruct-2407.jinja", True, "[/INST]"),
    # an older revision of Mistral-7B-Instruct-v0.3's: it renders no system message at all
    "mistral-7b-v0.3": Family("mistralai-Mistral-7B-Instruct-v0.3.jinja", False, " [/INST]"),
    "qwen-2.5": Family("Qwen-Qwen2.5-7B-Instruct.jinja", True, "<|im_start|>assistant\n"),
}


def template(name: str) -> str:
    return (TEMPLATES / FAMILIES[name].file).read_text(encoding="utf-8")


def transformers_ids(tokenizer, messages, chat_template: str) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, chat_template=chat_template, add_generation_prompt=True,
                                              return_dict=False))


def transformers_text(tokenizer, messages, chat_template: str) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, add_generation_prompt=True,
                                         tokenize=False)


def expected_messages(name: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return messages if FAMILIES[name].takes_system else fold_system(messages)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("messages", [
    CONVERSATION,
    CONVERSATION[:2],
    CONVERSATION[1:],
], ids=["system-multi-turn", "system-one-turn", "no-system"])
def test_the_engine_renders_what_transformers_renders(tokenizer, name, messages):
    chat = template(name)
    tokenizer.chat_template = chat
    prompts = ChatPrompts(tokenizer)
    assert prompts.takes_system() is FAMILIES[name].takes_system
    ours = prompts.token_ids(messages)
    assert ours == transformers_ids(tokenizer, expected_messages(name, messages), chat)
    text = transformers_text(tokenizer, expected_messages(name, messages), chat)
    assert text.endswith(FAMILIES[name].generation_prompt)
    for m in messages:  # every turn is in the prompt, the Catalan text unharmed
        assert m["content"].strip() in text
    assert tokenizer.decode(ours) == tokenizer.decode(transformers_ids(tokenizer, expected_messages(name, messages),
                                                                       chat))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_system_text_is_kept_in_every_family(tokenizer, name):
    tokenizer.chat_template = template(name)
    text = tokenizer.decode(ChatPrompts(tokenizer).token_ids(CONVERSATION))
    assert text.count(SYSTEM) == 1
    if not FAMILIES[name].takes_system:  # folded: it opens the first user turn
        assert f"{SYSTEM}\n\n{CONVERSATION[1]['content']}" in text


@pytest.mark.parametrize("name", FAMILIES)
def test_a_prompt_item_with_the_jobs_system_text_renders_like_messages(tokenizer, name):
    chat = template(name)
    tokenizer.chat_template = chat
    job = Job(items=[Item(custom_id="p", prompt=CONVERSATION[1]["content"])], system=SYSTEM)
    request = RequestBuilder(job, Limits()).build(job.items[0])
    assert request.plain
    ids = ChatPrompts(tokenizer).token_ids(request.messages, plain=request.plain)
    assert ids == transformers_ids(tokenizer, expected_messages(name, CONVERSATION[:2]), chat)


def test_the_gemma_fixture_renders_as_the_literal_it_replaced(tokenizer):
    """test_chat_roles.py carried Gemma-2's template as a Python literal with `\\n` escapes in Jinja strings."""
    literal = (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
        "{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    )
    assert literal != GEMMA2 and literal.replace("\\n", "\n") == GEMMA2
    folded = fold_system(CONVERSATION)
    assert transformers_text(tokenizer, folded, literal) == transformers_text(tokenizer, folded, GEMMA2)
