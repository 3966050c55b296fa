"""Thinking models write their reasoning between `<think>` and `</think>` before the answer (Qwen 3, DeepSeek-R1
distills, ...). The reasoning is shown apart and never kept in the text: these split it off."""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"


def split_reasoning(text: str, *, started: bool = False) -> tuple[str, str]:
    """(reasoning, content) of a model's output.

    The reasoning is what stands between `<think>` and `</think>` at the start (leading whitespace allowed);
    `started` says the prompt already opened the block (templates that end their generation prompt with
    `<think>`), so the output begins inside it. An unclosed block is all reasoning so far (the content is
    empty while the model is still thinking). Text without a block is all content.
    """
    body = text
    if not started:
        stripped = text.lstrip()
        if not stripped.startswith(OPEN):
            if CLOSE in text and OPEN not in text:  # the template opened the block without saying so
                reasoning, _, content = text.partition(CLOSE)
                return reasoning.strip(), content.lstrip()
            return "", text
        body = stripped[len(OPEN) :]
    reasoning, closed, content = body.partition(CLOSE)
    if not closed:
        return reasoning.strip(), ""
    return reasoning.strip(), content.lstrip()


def opens_thinking(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an open `<think>` block (its output then starts with the reasoning)."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN) or tail.rfind(OPEN) > tail.rfind(CLOSE)
