"""The prompt format's own markers become the model's special tokens; text the user wrote never does.

A prompt is rendered as text, so this module knows where each format puts its markers: a
TinyStories prompt opens with `<|startoftext|>`. That marker is tokenized with special tokens parsed
(one control token when the model has it, as in training); everything after it, the user's text, is
tokenized with special tokens left as plain characters, so a user who types `<|endoftext|>` gets
those characters, on llama.cpp and ONNX alike.
"""

from __future__ import annotations

import re

from talesmith.runtime.documents.formats import PromptDocument, TinyStory
from talesmith.runtime.documents.instruct import InstructChat, InstructStory, TemplatePlan
from talesmith.runtime.documents.prompts import TINY_START, plan

LEADING_MARKERS: dict[type, tuple[str, ...]] = {TinyStory: (TINY_START,)}
"""The markers each document type's prompt starts with."""


_MARKER_LIKE = re.compile(r"<[^<>\n]{1,64}>|\[/?[A-Za-z_]{2,24}\]")
"""Text that may be a special token's (`<|im_end|>`, `<end_of_turn>`, `[INST]`)."""


def template_segments(text: str, user_texts: tuple[str, ...]) -> list[tuple[str, bool]]:
    """A prompt rendered by a chat template, cut into (text, is the template's own) parts.

    When nothing a person wrote looks like a special token, the whole prompt is the template's (tokenized at
    once, special tokens parsed). Otherwise each text is found in order (whole, else line by line) and left
    plain, and only what lies between is parsed for special tokens."""
    if not any(_MARKER_LIKE.search(t) for t in user_texts):
        return [(text, True)]
    segments: list[tuple[str, bool]] = []
    at = 0

    def plain(found: int, part: str) -> None:
        nonlocal at
        if found > at:
            segments.append((text[at:found], True))
        segments.append((part, False))
        at = found + len(part)

    for block in user_texts:
        whole = block.strip()
        if whole and (found := text.find(whole, at)) >= 0:
            plain(found, whole)
            continue
        for line in block.splitlines():
            line = line.strip()
            if line and (found := text.find(line, at)) >= 0:
                plain(found, line)
    if at < len(text):
        segments.append((text[at:], True))
    return segments


def marker_segments(document: PromptDocument, text: str) -> list[tuple[str, bool]]:
    """The prompt cut into (text, is the format's marker) parts, in order."""
    if isinstance(document, (InstructChat, InstructStory)):
        prompt_plan = plan(document)
        assert isinstance(prompt_plan, TemplatePlan)
        return template_segments(text, prompt_plan.user_texts())
    for marker in LEADING_MARKERS.get(type(document), ()):
        if text.startswith(marker):
            rest = text[len(marker) :]
            return [(marker, True)] + ([(rest, False)] if rest else [])
    return [(text, False)]


def tokenize_prompt(backend, document: PromptDocument, text: str) -> list[int]:
    """The prompt's tokens: markers parsed as special tokens, the user's text never."""
    segments = marker_segments(document, text)
    if segments == [(text, False)]:
        return backend.tokenize(text)
    if isinstance(document, (InstructChat, InstructStory)):
        segments = _without_bos(backend, document, segments)
    tokens: list[int] = []
    for i, (part, special) in enumerate(segments):
        tokens += backend.tokenize(part, add_bos=i == 0, special=special)
    return tokens


def _without_bos(backend, document: InstructChat | InstructStory, segments: list[tuple[str, bool]]):
    """A template that writes the BOS text itself: taken off when the tokenizer adds BOS anyway (as llama.cpp does)."""
    bos = document.template.bos_token
    if bos and segments and segments[0][1] and segments[0][0].startswith(bos) and backend.tokenize("", add_bos=True):
        rest = segments[0][0][len(bos) :]
        return ([(rest, True)] if rest else []) + segments[1:]
    return segments
