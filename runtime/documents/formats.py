"""The documents a user writes: stories, chats and the simpler one-shot prompts.

Plain frozen data; the prompt builders in prompts.py turn each into text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

from talesmith.runtime.errors import SettingsError

LoreSource: TypeAlias = object
"""The lorebooks that apply to a prompt document: a `lorebook.Lore`, a function that makes it when the prompt
is built (so that a broken lorebook is an error of that prompt), or None. Documents sit below the lorebook
logic, so the type is narrowed where it is read (`lorebook.lore_of`)."""

Speaker = Literal["user", "character"]
USER: Final = "user"
CHARACTER: Final = "character"


@dataclass(frozen=True)
class StoryHeader:
    """The annotations of Lit-6B-style stories: `[ Title: ...; Author: ...; ... ]`."""

    title: str = ""
    author: str = ""
    genre: str = ""
    tags: tuple[str, ...] = ()
    style: str = ""

    def __bool__(self) -> bool:
        return any((self.title, self.author, self.genre, self.tags, self.style))


@dataclass(frozen=True)
class Story:
    """A story: header annotations (or a Japanese synopsis), memory, author's note and the text."""

    text: str = ""
    header: StoryHeader = field(default_factory=StoryHeader)
    synopsis: str = ""
    memory: str = ""
    author_note: str = ""
    author_note_depth: int = 3
    """Lines from the end of the text before which the author's note is inserted (at least 1)."""
    japanese: bool = False
    """Use the Genji-JP synopsis format (`あらすじ：...`) instead of the annotated header."""
    lore: LoreSource = field(default=None, compare=False, repr=False)
    """The lorebooks that apply: a `lorebook.Lore`, or a function that makes it (set by the document that made this)."""


@dataclass(frozen=True)
class Message:
    speaker: Speaker
    text: str


@dataclass(frozen=True)
class Chat:
    """A persona chat in the Pygmalion format."""

    character: str
    persona: str = ""
    scenario: str = ""
    examples: tuple[str, ...] = ()
    """Blocks of example dialogue; `{{char}}` and `{{user}}` stand for the two names."""
    messages: tuple[Message, ...] = ()
    user_name: str = "You"
    user_persona: str = ""
    """What the character knows about the user (shown as the user's persona)."""
    system_prompt: str = ""
    """The card's system prompt, placed first."""
    post_history: str = ""
    """The card's post-history instructions, placed after the conversation."""
    writer: Speaker = CHARACTER
    """Who writes next: the character (a reply), or the user (impersonation: the user's next line)."""
    started: str = ""
    """What the next message already holds (a reply cut off, to be continued): the prompt ends with it."""
    lore: LoreSource = field(default=None, compare=False, repr=False)
    """The lorebooks that apply: a `lorebook.Lore`, or a function that makes it (set by the document that made this)."""


@dataclass(frozen=True)
class GenrePrompt:
    """The horror / fairy-tale instruction prompts of the Falcon-7B and Llama-2-7B genre models."""

    genre: str = "horror"
    style: Literal["falcon", "llama"] = "falcon"
    text: str = ""
    """Story text already written after the instruction, to continue from."""
    lore: LoreSource = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TinyStory:
    """A TinyStories-style story, opened by `<|startoftext|>` and ended by `<|endoftext|>`."""

    text: str = ""
    lore: LoreSource = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RawText:
    text: str = ""
    lore: LoreSource = field(default=None, compare=False, repr=False)


PromptDocument = Story | Chat | GenrePrompt | TinyStory | RawText
"""What a prompt is built from (`prompts.plan`): one document of a prompt format."""


D = TypeVar("D")


def with_lore(document: D, lore: LoreSource) -> D:
    """`document` with `lore` as the lorebooks of its prompt: the one way lorebooks reach a prompt (`prepare`
    reads them from the document). A document that holds a story or chat (an instruct prompt, an adventure)
    gets them in what it holds; None leaves the document as it is."""
    if lore is None:
        return document
    inner = next((n for n in ("story", "chat") if hasattr(document, n)), None)
    if inner is not None:
        return dataclasses.replace(document, **{inner: with_lore(getattr(document, inner), lore)})  # type: ignore[type-var]
    return dataclasses.replace(document, lore=lore)  # type: ignore[type-var]


FORMATS: tuple[str, ...] = ("story", "japanese-story", "chat", "genre", "tinystories", "raw")
FIELDS: dict[str, tuple[str, ...]] = {
    "story": ("title", "author", "genre", "tags", "style", "memory", "author_note", "author_note_depth"),
    "japanese-story": ("synopsis", "memory", "author_note", "author_note_depth"),
    "chat": ("character", "persona", "scenario", "examples", "greeting"),
    "genre": ("genre", "genre_style"),
    "tinystories": (),
    "raw": (),
}
"""The fields each format takes besides its text (the `prompt`)."""


def _tags(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    return tuple(str(t) for t in value) if isinstance(value, Iterable) else ()


def _lines(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    return tuple(str(v) for v in value) if isinstance(value, Iterable) else ()


def _whole_number(name: str, value: object) -> int:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    raise SettingsError(f"{name} {value!r} is not a whole number")


@dataclass(frozen=True)
class PromptFormat:
    """A prompt format as one registration: its name, the fields it takes, and how a document is made.

    The document type's prompt plan is registered with `prompts.plan.register` beside it."""

    name: str
    fields: tuple[str, ...]
    make: Callable[[str, dict[str, object]], Any]
    """The document from its text and its given fields (only those in `fields`, empty values left out)."""


REGISTERED: dict[str, PromptFormat] = {}


def register_format(fmt: PromptFormat) -> PromptFormat:
    """Make `fmt` a format every front-end offers (`--format NAME`, batch columns, the app)."""
    global FORMATS
    REGISTERED[fmt.name] = fmt
    FIELDS[fmt.name] = fmt.fields
    if fmt.name not in FORMATS:
        FORMATS = (*FORMATS, fmt.name)
    return fmt


def make_document(fmt: str, text: str = "", fields: dict[str, object] | None = None) -> PromptDocument:
    """A document of format `fmt` from its text and fields (as given on a command line or in a batch row).

    Unknown formats and fields that the format does not take raise SettingsError naming them.
    """
    if fmt not in FIELDS:
        raise SettingsError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    given = {k: v for k, v in (fields or {}).items() if v not in (None, "", ())}
    extra = sorted(set(given) - set(FIELDS[fmt]))
    if extra:
        takes = ", ".join(FIELDS[fmt]) or "no fields besides the prompt"
        raise SettingsError(f"format {fmt!r} does not take {extra[0]!r}; it takes: {takes}")
    if fmt in REGISTERED:
        return REGISTERED[fmt].make(text, given)
    g = given.get
    if fmt in ("story", "japanese-story"):
        depth = _whole_number("author_note_depth", g("author_note_depth", 3))
        header = StoryHeader(
            title=str(g("title", "")),
            author=str(g("author", "")),
            genre=str(g("genre", "")),
            tags=_tags(g("tags")),
            style=str(g("style", "")),
        )
        return Story(
            text=text,
            header=header,
            synopsis=str(g("synopsis", "")),
            memory=str(g("memory", "")),
            author_note=str(g("author_note", "")),
            author_note_depth=depth,
            japanese=fmt == "japanese-story",
        )
    if fmt == "chat":
        messages = []
        if g("greeting"):
            messages.append(Message(CHARACTER, str(g("greeting"))))
        if text.strip():
            messages.append(Message(USER, text))
        return Chat(
            character=str(g("character", "")),
            persona=str(g("persona", "")),
            scenario=str(g("scenario", "")),
            examples=_lines(g("examples")),
            messages=tuple(messages),
        )
    if fmt == "genre":
        style = str(g("genre_style", "falcon"))
        return GenrePrompt(genre=str(g("genre", "horror")), style=style, text=text)  # type: ignore[arg-type]
    if fmt == "tinystories":
        return TinyStory(text=text)
    return RawText(text=text)


# --- undo history -------------------------------------------------------------------------

T = TypeVar("T")

HISTORY_LIMIT = 500
"""States kept before the present; the oldest are forgotten beyond this."""


@dataclass(frozen=True)
class History(Generic[T]):
    present: T
    past: tuple[T, ...] = ()
    future: tuple[T, ...] = ()

    def push(self, state: T, *, merge: bool = False) -> History[T]:
        """Make `state` the present. With `merge`, it replaces the present instead (one undo step
        for a burst of typing). Redo is no longer possible after a new state."""
        if state == self.present:
            return self
        if merge and self.past:
            return History(state, self.past, ())
        return History(state, (self.past + (self.present,))[-HISTORY_LIMIT:], ())

    def replace(self, state: T) -> History[T]:
        """Change the present without an undo step (for example after saving changes its name)."""
        return History(state, self.past, self.future)

    @property
    def can_undo(self) -> bool:
        return bool(self.past)

    @property
    def can_redo(self) -> bool:
        return bool(self.future)

    def undo(self) -> History[T]:
        if not self.past:
            return self
        return History(self.past[-1], self.past[:-1], (self.present,) + self.future)

    def redo(self) -> History[T]:
        if not self.future:
            return self
        return History(self.future[0], self.past + (self.present,), self.future[1:])
