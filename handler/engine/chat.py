"""Chat messages to prompt token ids, with the model's own chat template.

Some templates refuse the system role: Gemma-2's raises "System role not supported", and others
leave system messages out without a word. Which kind a model has is found from the template's
behaviour, never from the model's name: once per template, `[system, user]` is rendered with a
marker as the system text. If that raises while `[user]` alone renders, or the marker is missing
from the prompt, the template does not take the system role, and from then on the system text is
folded into the next user turn (Gemma's own advice), separated by a blank line. An item whose
messages the template still refuses with a system message in them is folded and rendered once
more; a refusal that folding does not cure fails that item alone (`invalid_item`).

A model without a chat template (a base model) serves prompts, as vLLM's `/v1/completions` does:
an item's own text (`prompt`, or `fields` through the job's template; `Request.plain`) is encoded as
it is, after the job's system text and a blank line. Chat messages sent to it fail their item
(`invalid_item`). Whether the model has a template is decided once, when the engine starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from shared.contracts.errors import ErrorCode, ItemFailure

if TYPE_CHECKING:
    from shared.contracts.prepare import Request

log = logging.getLogger(__name__)

#: the system text of the probe; a template that takes the role puts it in the prompt
_PROBE = "llm-jobs: probe of the system role"
_SEPARATOR = "\n\n"
NO_TEMPLATE = "this model has no chat template: send a prompt (`prompt`, or a /v1/completions line), not messages"

Messages = Sequence[dict[str, str]]


def fold_system(messages: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The same conversation without system messages: each one's text opens the next user turn.

    System text with no user turn after it closes the last user turn, and becomes the user turn
    when there is none.
    """
    out: list[dict[str, str]] = []
    pending: list[str] = []
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
        elif m["role"] == "user" and pending:
            out.append({**m, "content": _join(*pending, m["content"])})
            pending = []
        else:
            out.append(dict(m))
    if pending:
        last = next((i for i in reversed(range(len(out))) if out[i]["role"] == "user"), None)
        if last is None:
            out.insert(0, {"role": "user", "content": _join(*pending)})
        else:
            out[last] = {**out[last], "content": _join(out[last]["content"], *pending)}
    return out


def _join(*parts: str) -> str:
    return _SEPARATOR.join(p for p in parts if p)


def _has_system(messages: Messages) -> bool:
    return any(m["role"] == "system" for m in messages)


class ChatPrompts:
    """Renders chat messages with a tokenizer's chat template; one per engine."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        #: does the template take the system role, by template (so a changed template is probed again)
        self._takes_system: dict[str, bool] = {}
        #: False for a model without a chat template: it takes plain text only
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        if not self.has_template:
            log.info("the model has no chat template: it serves prompts (completions); chat messages fail their item")

    def takes_system(self) -> bool:
        """Whether the current chat template renders a system message (probed once per template)."""
        key = repr(getattr(self._tokenizer, "chat_template", None))
        if key not in self._takes_system:
            self._takes_system[key] = self._probe()
        return self._takes_system[key]

    def prompt_ids(self, request: Request) -> list[int]:
        """A request's prompt token ids, as the engine sends them: its messages through the chat template, or its
        prompt (an OpenAI completions line) encoded as it is. The planner counts tokens with this too
        (handler/engine/tokens.py), so its counts are the engine's."""
        if request.messages is not None:
            return self.token_ids(request.messages, plain=request.plain)
        return list(self._tokenizer.encode(request.prompt))

    def token_ids(self, messages: Messages, *, plain: bool = False) -> list[int]:
        """The prompt's token ids; raises ItemFailure when the template refuses the messages.

        `plain`: the messages are an item's own text after the job's system text (`Request.plain`); a
        model without a chat template takes that text as a prompt.
        """
        messages = list(messages)
        if not self.has_template:
            if not plain:
                raise ItemFailure(ErrorCode.invalid_item, NO_TEMPLATE)
            return list(self._tokenizer.encode(_join(*(m["content"] for m in messages))))
        if _has_system(messages) and not self.takes_system():
            messages = fold_system(messages)
        try:
            return self._render(messages)
        except Exception as e:
            if not _has_system(messages):
                _raise_refusal(e)
                raise
            log.debug("the chat template refused a system message (%s); folding it into the user turn", e)
        try:
            return self._render(fold_system(messages))
        except Exception as e:
            _raise_refusal(e)
            raise

    def _render(self, messages: list[dict[str, str]], *, tokenize: bool = True) -> Any:
        out = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize,
                                                  return_dict=False)
        return list(out) if tokenize else out

    def _probe(self) -> bool:
        user = {"role": "user", "content": "Hello."}
        try:
            text = self._render([{"role": "system", "content": _PROBE}, user], tokenize=False)
        except Exception as e:
            try:
                self._render([user], tokenize=False)
            except Exception:
                return True  # it fails without a system message too: that is not the system role's doing
            log.info("the chat template refuses the system role (%s: %s); system text goes into the "
                     "first user turn", type(e).__name__, e)
            return False
        if _PROBE not in text:
            log.info("the chat template leaves system messages out; system text goes into the first user turn")
            return False
        return True


def _raise_refusal(e: Exception) -> None:
    """A template's own refusal (raise_exception, an undefined value) fails the item, not the job."""
    from jinja2 import TemplateError

    if isinstance(e, TemplateError):
        raise ItemFailure(ErrorCode.invalid_item, f"the model's chat template refused these messages: {e}") from e
