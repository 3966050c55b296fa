"""The prompt format's own markers become the model's special tokens; text the user wrote never does.

A prompt is rendered as text, so this module knows where each format puts its markers: a
TinyStories prompt opens with `<|startoftext|>`. That marker is tokenized with special tokens parsed
(one control token when the model has it, as in training); everything after it, the user's text, is
tokenized with special tokens left as plain characters, so a user who types `<|endoftext|>` gets
those characters, on llama.cpp and ONNX alike.
"""

from __future__ import annotations

from talesmith.runtime.documents.formats import Document, TinyStory
from talesmith.runtime.documents.prompts import TINY_START

LEADING_MARKERS: dict[type, tuple[str, ...]] = {TinyStory: (TINY_START,)}
"""The markers each document type's prompt starts with."""


def marker_segments(document: Document, text: str) -> list[tuple[str, bool]]:
    """The prompt cut into (text, is the format's marker) parts, in order."""
    for marker in LEADING_MARKERS.get(type(document), ()):
        if text.startswith(marker):
            rest = text[len(marker) :]
            return [(marker, True)] + ([(rest, False)] if rest else [])
    return [(text, False)]


def tokenize_prompt(backend, document: Document, text: str) -> list[int]:
    """The prompt's tokens: markers parsed as special tokens, the user's text never."""
    segments = marker_segments(document, text)
    if segments == [(text, False)]:
        return backend.tokenize(text)
    tokens: list[int] = []
    for i, (part, special) in enumerate(segments):
        tokens += backend.tokenize(part, add_bos=i == 0, special=special)
    return tokens
