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


class ReasoningStream:
    """`split_reasoning` for text that arrives in pieces: each piece gives (reasoning, content) to show now.

    A tag cut between two pieces is held back until it is whole; the whitespace after `</think>` is dropped."""

    def __init__(self, *, started: bool = False) -> None:
        self.state = "thinking" if started else "start"
        self.buffer = ""
        self.reasoning = ""
        self.content = ""

    def feed(self, text: str) -> tuple[str, str]:
        self.buffer += text
        thought, said = "", ""
        while self.buffer:
            if self.state == "start":
                head = self.buffer.lstrip()
                if head.startswith(OPEN):
                    self.buffer, self.state = head[len(OPEN) :], "thinking"
                    continue
                if not head or OPEN.startswith(head):
                    break  # maybe the start of <think>
                self.state = "content"
            elif self.state == "thinking":
                at = self.buffer.find(CLOSE)
                if at >= 0:
                    thought += self.buffer[:at]
                    self.buffer, self.state = self.buffer[at + len(CLOSE) :], "after"
                    continue
                keep = next((n for n in range(len(CLOSE) - 1, 0, -1) if self.buffer.endswith(CLOSE[:n])), 0)
                thought += self.buffer[: len(self.buffer) - keep]
                self.buffer = self.buffer[len(self.buffer) - keep :]
                break
            elif self.state == "after":
                self.buffer = self.buffer.lstrip()
                if not self.buffer:
                    break
                self.state = "content"
            else:
                said += self.buffer
                self.buffer = ""
        self.reasoning += thought
        self.content += said
        return thought, said

    def finish(self) -> tuple[str, str]:
        """What is left at the end: a held-back partial tag is text after all."""
        rest, self.buffer = self.buffer, ""
        if self.state == "thinking":
            self.reasoning += rest
            return rest, ""
        if self.state in ("start", "content"):
            self.content += rest
            return "", rest
        return "", ""
