"""A chat example as the model sees it: token ids through its chat template, and which of them are the
assistant's (the loss's targets, and what perplexity is measured on).

The assistant's tokens are found by rendering the conversation a turn at a time: the tokens a turn
adds after `add_generation_prompt=True` on the turns before it are the assistant's. This works with
any chat template, including ones without `{% generation %}` markers (SmolLM2's, Llama's, Gemma's);
where the template renders a prefix differently from the whole (a template that rewrites earlier
turns), the mask falls back to the last assistant turn's tail, found the same way.

`encode` is plain CPU work: call it in a thread from async code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    #: 1 where the token is the assistant's
    assistant_masks: list[int]

    @property
    def tokens(self) -> int:
        return len(self.input_ids)

    @property
    def assistant_tokens(self) -> int:
        return sum(self.assistant_masks)


def _ids(tokenizer: Any, messages: list[dict[str, str]], *, prompt: bool) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt,
                                            return_dict=True)
        return list(out["input_ids"])
    # a model without a chat template (a base model): turns as plain text, the assistant's after "\n"
    text = "".join(m["content"] + ("\n" if m["role"] != "assistant" else "") for m in messages)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode(tokenizer: Any, messages: list[dict[str, str]], *, assistant_only: bool = True) -> Encoded:
    """The example's tokens and its assistant mask (all ones when `assistant_only` is off: every token
    is a target)."""
    full = _ids(tokenizer, messages, prompt=False)
    if tokenizer.eos_token_id is not None and not getattr(tokenizer, "chat_template", None):
        full.append(tokenizer.eos_token_id)
    if not assistant_only:
        return Encoded(full, [1] * len(full))
    mask = [0] * len(full)
    ok = True
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _ids(tokenizer, messages[:i], prompt=True)
        start = len(prefix)
        end = len(_ids(tokenizer, messages[:i + 1], prompt=False)) if i + 1 < len(messages) else len(full)
        if prefix != full[:start] or end > len(full):
            ok = False
            break
        for k in range(start, end):
            mask[k] = 1
    if not ok:  # the template renders a prefix unlike the whole: the last assistant turn, from its prompt on
        mask = [0] * len(full)
        start = len(_ids(tokenizer, messages[:-1], prompt=True))
        for k in range(min(start, len(full)), len(full)):
            mask[k] = 1
    return Encoded(full, mask)
