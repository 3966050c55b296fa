"""Stories and chats as the terminal app keeps them: alternatives, swipes, JSON files, atomic saves.

Plain frozen data with pure operations; the app replaces a document whole after each change and
keeps the states in a `documents.History` for undo and redo.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from talesmith.runtime import files
from talesmith.runtime.documents import worldinfo
from talesmith.runtime.documents.adventure import Adventure
from talesmith.runtime.documents.cards import (
    Character,
    character_from_card,
    clean_text,
    clean_tree,
    fill_macros,
    to_card,
)
from talesmith.runtime.documents.formats import CHARACTER, USER, Chat, Message, Speaker, Story, StoryHeader
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.errors import InputError, SettingsError
from talesmith.runtime.schema import Model, validate
from talesmith.runtime.settings import SamplingSettings, preset

VERSION = 1


def _default_settings() -> SamplingSettings:
    return preset("default")


# --- stories ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alternatives:
    """The continuations generated at one point of a story; `index` is the one shown. A point inside the
    story keeps the text that stood after it (`after`) below each of them."""

    base: str
    options: tuple[str, ...]
    index: int = 0
    after: str = ""

    @property
    def current(self) -> str:
        return self.options[self.index]

    @property
    def text(self) -> str:
        return self.base + self.current + self.after

    def cycle(self, step: int) -> Alternatives:
        return dataclasses.replace(self, index=(self.index + step) % len(self.options))

    def add(self, option: str) -> Alternatives:
        return Alternatives(self.base, self.options + (option,), len(self.options), self.after)


@dataclass(frozen=True)
class StoryDocument:
    story: Story = field(default_factory=Story)
    name: str = "Untitled story"
    alternatives: Alternatives | None = None
    settings: SamplingSettings = field(default_factory=_default_settings)
    preset: str = "default"
    model: str = ""
    lorebooks: tuple[Lorebook, ...] = ()
    """Lorebooks attached to this document (besides its character's and the global ones)."""
    lore_placement: str = ""
    """Where lorebook entries go in this document: "" as the lorebooks say (SillyTavern's placement unless a
    book sets another), "declared" or "anchored" (the cache-friendly choice); see `lorebook`."""
    adventure: bool = False
    """Played as an adventure: actions (`> You ...`) written into the text, the model stopped at the next."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What an imported file held that talesmith does not use, kept so that exporting gives it back."""

    @property
    def text(self) -> str:
        return self.story.text

    def live_alternatives(self) -> Alternatives | None:
        """The alternatives, if the text still ends with the one shown (an edit since invalidates them)."""
        alt = self.alternatives
        return alt if alt is not None and alt.text == self.story.text else None

    def prompt_story(self, *, global_books: tuple[Lorebook, ...] = ()) -> Story | Adventure:
        """The story to build the prompt from, with its lorebooks (and the global ones); an adventure's
        stops where the model starts the next action."""
        story = dataclasses.replace(
            self.story, lore=functools.partial(worldinfo.document_lore, self, global_books=global_books)
        )
        return Adventure(story) if self.adventure else story

    def prompt_story_at(self, index: int, *, global_books: tuple[Lorebook, ...] = ()) -> Story | Adventure:
        """The prompt document for writing at `index` of the text: the story up to there, nothing after it
        (the text after the point is kept below what is written, never sent as context past it)."""
        before = dataclasses.replace(self, story=dataclasses.replace(self.story, text=self.story.text[:index]))
        return before.prompt_story(global_books=global_books)

    def with_story(self, **changes: Any) -> StoryDocument:
        return dataclasses.replace(self, story=dataclasses.replace(self.story, **changes))

    def with_text(self, text: str) -> StoryDocument:
        """The story with `text`; its alternatives follow the edit where they still can (see `_rebased`)."""
        return dataclasses.replace(
            self, story=dataclasses.replace(self.story, text=text), alternatives=self._rebased(text)
        )

    def _rebased(self, text: str) -> Alternatives | None:
        """The alternatives after the text became `text`: an edit after their point changes the one shown, an
        edit before it moves the point; an edit of both ends them. Alternatives no longer live stay as they are."""
        alt = self.live_alternatives()
        if alt is None:
            return self.alternatives
        if alt.after and text.startswith(alt.base + alt.current):  # an edit of the text below them
            return dataclasses.replace(alt, after=text[len(alt.base + alt.current) :])
        if text.startswith(alt.base) and text.endswith(alt.after) and len(text) >= len(alt.base + alt.after):
            options = list(alt.options)
            options[alt.index] = text[len(alt.base) : len(text) - len(alt.after)]
            return dataclasses.replace(alt, options=tuple(options))
        if alt.current and text.endswith(alt.current + alt.after):
            return dataclasses.replace(alt, base=text[: len(text) - len(alt.current + alt.after)])
        return None

    def continued(self, base: str, continuation: str, after: str = "") -> StoryDocument:
        """The story after a generation at `base` (with `after` below it, for a point inside the story): a
        retry adds an alternative, a new point starts a list."""
        alt = self.live_alternatives()
        if alt is not None and alt.base == base and alt.after == after:
            alt = alt.add(continuation)
        else:
            alt = Alternatives(base, (continuation,), after=after)
        return dataclasses.replace(self, story=dataclasses.replace(self.story, text=alt.text), alternatives=alt)

    def cycled(self, step: int) -> StoryDocument:
        alt = self.live_alternatives()
        if alt is None or len(alt.options) < 2:
            return self
        alt = alt.cycle(step)
        return dataclasses.replace(self, story=dataclasses.replace(self.story, text=alt.text), alternatives=alt)

    def kept(self) -> StoryDocument:
        """Keep the alternative shown and forget the others."""
        return dataclasses.replace(self, alternatives=None)


# --- chats ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    speaker: Speaker
    swipes: tuple[str, ...]
    """The versions of this message (regenerated replies); `index` is the one shown."""
    index: int = 0

    @property
    def text(self) -> str:
        return self.swipes[self.index]

    def with_swipe(self, text: str) -> ChatMessage:
        return ChatMessage(self.speaker, self.swipes + (text,), len(self.swipes))

    def cycled(self, step: int) -> ChatMessage:
        return dataclasses.replace(self, index=(self.index + step) % len(self.swipes))

    def edited(self, text: str) -> ChatMessage:
        swipes = list(self.swipes)
        swipes[self.index] = text
        return dataclasses.replace(self, swipes=tuple(swipes))


DEFAULT_USER = "You"


@dataclass(frozen=True)
class User:
    """Who writes to the characters: a name for `{{user}}` and an optional persona the character knows."""

    name: str = DEFAULT_USER
    persona: str = ""


@dataclass(frozen=True)
class ChatDocument:
    character: Character
    messages: tuple[ChatMessage, ...] = ()
    name: str = ""
    user_name: str = ""
    """This chat's own user name; empty: the global one (see `User`)."""
    settings: SamplingSettings = field(default_factory=lambda: preset("pygmalion"))
    preset: str = "pygmalion"
    model: str = ""
    user_persona: str = ""
    """This chat's own user persona; empty: the global one."""
    lorebooks: tuple[Lorebook, ...] = ()
    """Lorebooks attached to this document (besides its character's and the global ones)."""
    lore_placement: str = ""
    """Where lorebook entries go in this document: "" as the lorebooks say (SillyTavern's placement unless a
    book sets another), "declared" or "anchored" (the cache-friendly choice); see `lorebook`."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What an imported file held that talesmith does not use, kept so that exporting gives it back."""

    @classmethod
    def start(cls, character: Character, *, user: User = User(), **kwargs: Any) -> ChatDocument:
        """A new chat opened by the character's greeting (alternate greetings become its swipes)."""
        name = kwargs.get("user_name") or user.name
        greetings = tuple(
            fill_macros(g, char=character.name, user=name)
            for g in (character.greeting, *character.alternate_greetings)
            if g.strip()
        )
        messages = (ChatMessage(CHARACTER, greetings),) if greetings else ()
        kwargs.setdefault("name", f"Chat with {character.name}")
        return cls(character=character, messages=messages, **kwargs)

    def user(self, default: User = User()) -> User:
        """The user of this chat: its own name and persona where set, else `default`'s."""
        return User(
            self.user_name.strip() or default.name.strip() or DEFAULT_USER, self.user_persona.strip() or default.persona
        )

    def fill(self, text: str, default: User = User()) -> str:
        """`text` with the card macros filled for this chat."""
        return fill_macros(text, char=self.character.name, user=self.user(default).name)

    def to_chat(self, upto: int | None = None, *, user: User = User(), global_books: tuple[Lorebook, ...] = ()) -> Chat:
        """The prompt document of the conversation (its first `upto` messages); its macros are filled by the
        prompt (`prompts.plan`), once."""
        c, u = self.character, self.user(user)
        return Chat(
            character=c.name,
            persona=c.full_persona(),
            scenario=c.scenario,
            examples=c.example_blocks(),
            messages=tuple(Message(m.speaker, m.text) for m in self.messages[:upto]),
            user_name=u.name,
            user_persona=u.persona,
            system_prompt=c.system_prompt,
            post_history=c.post_history,
            lore=functools.partial(worldinfo.document_lore, self, global_books=global_books),
        )

    def _with(self, messages: list[ChatMessage] | tuple[ChatMessage, ...]) -> ChatDocument:
        return dataclasses.replace(self, messages=tuple(messages))

    def sent(self, text: str) -> ChatDocument:
        return self._with(self.messages + (ChatMessage(USER, (text,)),))

    def replied(self, text: str) -> ChatDocument:
        return self._with(self.messages + (ChatMessage(CHARACTER, (text,)),))

    def swiped_reply(self, text: str) -> ChatDocument:
        """A new version of the last reply, shown."""
        return self._with(self.messages[:-1] + (self.messages[-1].with_swipe(text),))

    @property
    def last_is_reply(self) -> bool:
        return bool(self.messages) and self.messages[-1].speaker == CHARACTER

    def cycled(self, step: int) -> ChatDocument:
        if not self.last_is_reply or len(self.messages[-1].swipes) < 2:
            return self
        return self._with(self.messages[:-1] + (self.messages[-1].cycled(step),))

    def edited(self, index: int, text: str) -> ChatDocument:
        messages = list(self.messages)
        messages[index] = messages[index].edited(text)
        return self._with(messages)

    def deleted(self, index: int) -> ChatDocument:
        return self._with(self.messages[:index] + self.messages[index + 1 :])


LibraryDocument = StoryDocument | ChatDocument
"""What the app edits and the Library keeps, one JSON file each; `prompt_story` / `to_chat` give its PromptDocument."""


# --- JSON -------------------------------------------------------------------------------------


class _HeaderFile(Model):
    title: str = ""
    author: str = ""
    genre: str = ""
    tags: tuple[str, ...] = ()
    style: str = ""


class _AlternativesFile(Model):
    base: str
    options: tuple[str, ...] = Field(min_length=1)
    index: int = Field(0, ge=0)
    after: str = ""


class _MessageFile(Model):
    speaker: Speaker
    swipes: tuple[str, ...] = Field(min_length=1)
    index: int = Field(0, ge=0)


class _LorebookFile(Model):
    name: str
    world_info: Any


class _DocumentFile(Model):
    """What stories and chats share in their JSON (see `to_dict`)."""

    MESSAGES = {"lore_placement": "{field} is {value}; use declared or anchored"}

    name: str = ""
    preset: str = ""
    model: str = ""
    settings: dict[str, Any] = {}
    lorebooks: tuple[_LorebookFile, ...] | None = None
    lore_placement: Literal["", "declared", "anchored"] = ""
    extra: dict[str, Any] | None = None


class _StoryFile(_DocumentFile):
    kind: Literal["story"]
    name: str = "Untitled story"
    text: str = ""
    header: _HeaderFile | None = None
    japanese: bool = False
    synopsis: str = ""
    memory: str = ""
    author_note: str = ""
    author_note_depth: int = 3
    alternatives: _AlternativesFile | None = None
    adventure: bool = False


class _ChatFile(_DocumentFile):
    kind: Literal["chat"]
    character: Any
    messages: tuple[_MessageFile, ...] = ()
    user_name: str = ""
    user_persona: str = ""


def _settings_from(data: dict[str, Any], where: str) -> SamplingSettings:
    try:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return SamplingSettings(**values)
    except TypeError as e:
        raise InputError(f"{where}: unknown sampling setting ({e})") from None
    except SettingsError as e:
        raise InputError(f"{where}: {e}") from None


def to_dict(doc: LibraryDocument) -> dict[str, Any]:
    common = {
        "version": VERSION,
        "name": doc.name,
        "preset": doc.preset,
        "model": doc.model,
        "settings": doc.settings.to_dict(),
    }
    common.update(
        {"lorebooks": [{"name": b.name, "world_info": worldinfo.to_st(b)} for b in doc.lorebooks]}
        if doc.lorebooks
        else {}
    )
    common.update({"lore_placement": doc.lore_placement} if doc.lore_placement else {})
    common.update({"extra": doc.extra} if doc.extra else {})
    if isinstance(doc, StoryDocument):
        s = doc.story
        alt = doc.live_alternatives()
        return {
            "kind": "story",
            **common,
            "text": s.text,
            "header": {
                "title": s.header.title,
                "author": s.header.author,
                "genre": s.header.genre,
                "tags": list(s.header.tags),
                "style": s.header.style,
            },
            "japanese": s.japanese,
            "synopsis": s.synopsis,
            "memory": s.memory,
            "author_note": s.author_note,
            "author_note_depth": s.author_note_depth,
            "alternatives": None
            if alt is None
            else {"base": alt.base, "options": list(alt.options), "index": alt.index}
            | ({"after": alt.after} if alt.after else {}),
            **({"adventure": True} if doc.adventure else {}),
        }
    return {
        "kind": "chat",
        **common,
        "user_name": doc.user_name,
        "user_persona": doc.user_persona,
        "character": to_card(doc.character),
        "messages": [{"speaker": m.speaker, "swipes": list(m.swipes), "index": m.index} for m in doc.messages],
    }


def _common(d: _DocumentFile, where: str) -> dict[str, Any]:
    """What stories and chats share: name, sampling, lorebooks and imported extras."""
    books = tuple(worldinfo.lorebook_from_json(b.world_info, b.name, where) for b in d.lorebooks or ())
    return {
        "name": d.name,
        "settings": _settings_from(d.settings, where),
        "preset": d.preset,
        "model": d.model,
        "lorebooks": books,
        "lore_placement": d.lore_placement,
        "extra": d.extra or {},
    }


def _story_from(d: _StoryFile, where: str) -> StoryDocument:
    h = d.header or _HeaderFile()
    header = StoryHeader(title=h.title, author=h.author, genre=h.genre, tags=h.tags, style=h.style)
    story = Story(
        text=d.text,
        header=header,
        synopsis=d.synopsis,
        memory=d.memory,
        author_note=d.author_note,
        author_note_depth=d.author_note_depth,
        japanese=d.japanese,
    )
    a = d.alternatives
    alt = None if a is None else Alternatives(a.base, a.options, min(a.index, len(a.options) - 1), a.after)
    return StoryDocument(story=story, alternatives=alt, adventure=d.adventure, **_common(d, where))


def _chat_from(d: _ChatFile, where: str) -> ChatDocument:
    messages = tuple(ChatMessage(m.speaker, m.swipes, min(m.index, len(m.swipes) - 1)) for m in d.messages)
    own_name = "" if d.user_name == DEFAULT_USER and "user_persona" not in d.model_fields_set else d.user_name
    return ChatDocument(
        character=character_from_card(d.character, where),
        messages=messages,
        user_name=own_name,  # older files always wrote "You"
        user_persona=d.user_persona,
        **_common(d, where),
    )


def from_dict(d: Any, where: str = "document") -> LibraryDocument:
    """A document from its JSON; a file of the wrong shape raises InputError naming it, the field and the value."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "story":
        return _story_from(validate(_StoryFile, d, where), where)
    if kind == "chat":
        return _chat_from(validate(_ChatFile, d, where), where)
    raise InputError(f"{where} is not a talesmith story or chat")


def dumps(doc: LibraryDocument) -> str:
    return json.dumps(to_dict(doc), ensure_ascii=False, indent=1) + "\n"


def atomic_write(path: Path, text: str) -> int:
    """Write a document so that a crash leaves either the old file or the new one, readable by its owner only.

    Characters that UTF-8 cannot hold (lone surrogates, from a hostile card) are written as U+FFFD;
    returns how many were replaced, so the caller can say so.
    """
    text, replaced = clean_text(text)
    files.write_atomic(path, text, mode=files.PRIVATE)
    return replaced


# --- the stories and chats folders ------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    modified: float
    error: str = ""
    """Why the file could not be read (the entry is listed so the user sees it)."""


def slug(name: str) -> str:
    s = re.sub(r"[^\w-]+", "-", name.strip().lower(), flags=re.UNICODE).strip("-_")
    return s[:40] or "untitled"


class Library:
    """A folder of documents of one kind, one `ID.json` each."""

    def __init__(self, folder: Path, kind: str):
        self.folder = Path(folder)
        self.kind = kind

    def path(self, doc_id: str) -> Path:
        if not doc_id or "/" in doc_id or "\\" in doc_id or doc_id.startswith("."):
            raise InputError(f"{doc_id!r} is not a document id")
        return self.folder / f"{doc_id}.json"

    def new_id(self, name: str) -> str:
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(name)}"
        doc_id, n = base, 1
        while self.path(doc_id).exists():
            n += 1
            doc_id = f"{base}-{n}"
        return doc_id

    def save(self, doc_id: str, doc: LibraryDocument) -> int:
        """Write the document; returns how many characters had to be replaced (see `atomic_write`)."""
        return atomic_write(self.path(doc_id), dumps(doc))

    def load(self, doc_id: str) -> LibraryDocument:
        path = self.path(doc_id)
        data = files.read_text(
            path,
            json.loads,
            errors=(json.JSONDecodeError,),
            missing=f"{path} no longer exists",
            unreadable=lambda e: f"{path} cannot be read ({e}); it was left as it is",
        )
        doc = from_dict(clean_tree(data)[0], str(path))
        if (self.kind == "story") != isinstance(doc, StoryDocument):
            raise InputError(f"{path} is not a {self.kind}")
        return doc

    def entries(self) -> list[Entry]:
        """The documents, newest first; unreadable files are listed with their error."""
        out = []
        for path in self._files():
            try:
                modified = path.stat().st_mtime
                doc = self.load(path.stem)
                out.append(Entry(path.stem, doc.name, modified))
            except (InputError, OSError) as e:
                out.append(Entry(path.stem, path.stem, 0.0, str(e)))
        return sorted(out, key=lambda e: -e.modified)

    def _files(self) -> Iterator[Path]:
        if self.folder.is_dir():
            yield from (p for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def rename(self, doc_id: str, name: str) -> LibraryDocument:
        name = name.strip()
        if not name:
            raise InputError("a name cannot be empty; type a name")
        doc = dataclasses.replace(self.load(doc_id), name=name)
        self.save(doc_id, doc)
        return doc

    def delete(self, doc_id: str) -> None:
        path = self.path(doc_id)
        path.unlink(missing_ok=True)
        state = files.state_path(path)
        for cache in (state, files.state_meta_path(state)):  # its saved KV state, if any
            cache.unlink(missing_ok=True)


# --- export -----------------------------------------------------------------------------------


def export_text(doc: LibraryDocument) -> str:
    """The document as plain text: its title (and author) first, then the story or the messages."""
    if isinstance(doc, StoryDocument):
        h = doc.story.header
        head = [h.title.strip() or doc.name] + ([f"by {h.author.strip()}"] if h.author.strip() else [])
        return "\n".join(head) + "\n\n" + doc.text.rstrip("\n") + "\n"
    return f"{doc.name}\n\n" + "".join(f"{_speaker(doc, m)}: {m.text.strip()}\n\n" for m in doc.messages)


def _speaker(doc: ChatDocument, m: ChatMessage) -> str:
    return doc.character.name if m.speaker == CHARACTER else doc.user().name


def export_markdown(doc: LibraryDocument) -> str:
    if isinstance(doc, ChatDocument):
        lines = [f"# {doc.name}", ""]
        for m in doc.messages:
            lines += [f"**{_speaker(doc, m)}:** {_md_breaks(m.text.strip())}", ""]
        return "\n".join(lines)
    s = doc.story
    lines = [f"# {s.header.title or doc.name}", ""]
    if s.header.author:
        lines += [f"*by {s.header.author}*", ""]
    meta = " · ".join(x for x in (s.header.genre, ", ".join(s.header.tags), s.header.style) if x)
    if meta:
        lines += [f"_{meta}_", ""]
    if s.japanese and s.synopsis.strip():
        lines += [f"> {s.synopsis.strip()}", ""]
    lines += [_md_breaks(doc.text.rstrip("\n")), ""]
    return "\n".join(lines)


def _md_breaks(text: str) -> str:
    """`text` with each line break kept in Markdown (a backslash before it: a hard line break), blank lines
    (paragraphs) left as they are."""
    return re.sub(r"(?<=[^\n])\n(?=[^\n])", "\\\\\n", text)


def export(doc: LibraryDocument, path: Path, *, user: User | None = None, replace: bool = False) -> Path:
    """Write the document as plain text (.txt) or Markdown (.md), chosen by the path's suffix.

    A chat that sets no user name of its own is written with `user`'s (the app's, F8). An existing file is
    never written over unless `replace`: an InputError says so and leaves it as it is."""
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".md"):
        raise InputError(f"cannot export to {path.name}: use a name ending in .txt or .md")
    if isinstance(doc, ChatDocument) and user is not None and not doc.user_name.strip():
        doc = dataclasses.replace(doc, user_name=user.name)
    files.check_target(path, force=replace, fix="choose another name")
    text, _ = clean_text(export_markdown(doc) if suffix == ".md" else export_text(doc))
    try:
        files.write_atomic(path, text, mode=files.PRIVATE, replace=replace)
    except files.TargetExistsError:
        raise InputError(f"{path} already exists and was left as it is; choose another name") from None
    return path
