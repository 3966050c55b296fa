"""`/v1/chat/completions`: messages through the model's chat template, replies split into reasoning and content.

A model that carries no chat template is served with ChatML, as llama.cpp's server does (and said once in
the log). A thinking model's `<think>...</think>` goes to `reasoning_content`, streamed as it comes; text
that could still become a tag is held back until it is decided.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from talesmith.cli.serve.requests import RequestError
from talesmith.runtime.templates import ChatTemplate, split_reasoning
from talesmith.runtime.templates.reasoning import CLOSE, OPEN, opens_thinking

log = logging.getLogger("talesmith.serve")

CHATML = ChatTemplate(
    text=(
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    source="ChatML (the model carries no chat template)",
    stop_strings=("<|im_end|>", "<|im_start|>"),
)
ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})


@dataclass(frozen=True)
class ChatPrompt:
    prompt: str
    stops: tuple[str, ...]
    thinking: bool
    """The prompt opened a `<think>` block: the reply starts inside it."""


def _content(index: int, value: Any) -> str:
    """A message's text: a string, or OpenAI's list of parts (text parts only)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"messages[{index}].content: only text parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    if value is None:
        return ""
    raise RequestError(f"messages[{index}].content must be a string or a list of text parts", param="messages")


def read_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RequestError(f"messages[{i}] must be an object with role and content", param="messages")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(
                f"messages[{i}].role {json.dumps(role)} is not one of {', '.join(sorted(ROLES))}", param="messages"
            )
        out.append({"role": role, "content": _content(i, message.get("content"))})
    return out


_warned_chatml = False


def chat_prompt(template: ChatTemplate | None, body: Mapping[str, Any]) -> ChatPrompt:
    """The prompt the template makes of the request's messages, and where its replies end."""
    global _warned_chatml
    messages = read_messages(body)
    if template is None:
        if not _warned_chatml:
            log.warning("the model carries no chat template: chat requests are written as ChatML")
            _warned_chatml = True
        template = CHATML
    final = bool(body.get("continue_final_message")) and messages[-1]["role"] == "assistant"
    rendered = template.render(messages, add_generation_prompt=not final, continue_final_message=final)
    for note in rendered.notes:
        log.info("chat template: %s", note)
    return ChatPrompt(rendered.text, template.stop_strings, opens_thinking(rendered.text))


def _undecided(text: str) -> int:
    """How many characters at the end of `text` could still grow into `<think>` or `</think>`."""
    for k in range(min(len(CLOSE) - 1, len(text)), 0, -1):
        tail = text[-k:]
        if CLOSE.startswith(tail) or OPEN.startswith(tail):
            return k
    return 0


class ChatStream:
    """One reply's text as OpenAI chat deltas: `reasoning_content` for a thinking model's reasoning, `content`."""

    def __init__(self, thinking: bool):
        self.thinking = thinking
        self._text = ""
        self._reasoning = ""
        self._content = ""

    def push(self, text: str, *, final: bool = False) -> dict[str, str]:
        self._text += text
        view = self._text if final else self._text[: len(self._text) - _undecided(self._text)]
        reasoning, content = split_reasoning(view, started=self.thinking)
        delta = {}
        if reasoning.startswith(self._reasoning) and len(reasoning) > len(self._reasoning):
            delta["reasoning_content"] = reasoning[len(self._reasoning) :]
            self._reasoning = reasoning
        if content.startswith(self._content) and len(content) > len(self._content):
            delta["content"] = content[len(self._content) :]
            self._content = content
        return delta

    def message(self, text: str) -> dict[str, str]:
        reasoning, content = split_reasoning(text, started=self.thinking)
        message = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        return message
